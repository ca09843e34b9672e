//! Finds the line and column of a YAML path (`policies[0].schedule.cron`) in the source text.
//!
//! serde gives a location only for the first error it meets. The validation pass finds many
//! problems after deserialisation, each known by its path; this index turns each path back into
//! `file:line:column` so every message points at the culprit.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based position in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Path → position of the value (and of the key, for mapping entries).
#[derive(Debug, Default)]
pub struct Index {
    values: HashMap<String, Location>,
    keys: HashMap<String, Location>,
}

impl Index {
    /// Builds the index; returns an empty one if the text does not parse (serde reports that).
    pub fn build(text: &str) -> Index {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Index::default();
        }
        builder.index
    }

    /// Where the value at `path` starts; falls back to the nearest ancestor that is known.
    pub fn value(&self, path: &str) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(l) = self.values.get(p) {
                return Some(*l);
            }
            p = parent(p)?;
        }
    }

    /// Where the key of the mapping entry at `path` is, if it is one.
    pub fn key(&self, path: &str) -> Option<Location> {
        self.keys.get(path).copied().or_else(|| self.value(path))
    }
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    index: Index,
}

fn location(mark: Marker) -> Location {
    Location {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Builder {
    /// The path of the node that is about to start, or `None` if it is a mapping key.
    fn next_node_path(&mut self, mark: Marker, key_text: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some(key) => Some(if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                }),
                None => {
                    // This node is a key.
                    let key = key_text.unwrap_or("?").to_string();
                    let full = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.index.keys.insert(full, location(mark));
                    *pending_key = Some(key);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) => {
                if let Some(path) = self.next_node_path(mark, Some(&text)) {
                    self.index.values.insert(path, location(mark));
                }
            }
            Event::Alias(_) => {
                if let Some(path) = self.next_node_path(mark, None) {
                    self.index.values.insert(path, location(mark));
                }
            }
            Event::MappingStart(..) => {
                let path = self.next_node_path(mark, None).unwrap_or_default();
                self.index
                    .values
                    .entry(path.clone())
                    .or_insert(location(mark));
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.next_node_path(mark, None).unwrap_or_default();
                self.index
                    .values
                    .entry(path.clone())
                    .or_insert(location(mark));
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values_and_keys() {
        let text = "cds:\n  timeout: 30s\npolicies:\n  - name: a\n    schedule:\n      cron: \"x\"\n  - name: b\n";
        let idx = Index::build(text);
        assert_eq!(
            idx.value("cds.timeout"),
            Some(Location {
                line: 2,
                column: 12
            })
        );
        assert_eq!(
            idx.key("cds.timeout"),
            Some(Location { line: 2, column: 3 })
        );
        assert_eq!(
            idx.value("policies[0].schedule.cron"),
            Some(Location {
                line: 6,
                column: 13
            })
        );
        assert_eq!(
            idx.value("policies[1].name"),
            Some(Location {
                line: 7,
                column: 11
            })
        );
        // Unknown paths fall back to the nearest known ancestor.
        assert_eq!(
            idx.value("policies[1].retention.destination"),
            idx.value("policies[1]")
        );
    }

    #[test]
    fn flow_style_is_indexed_too() {
        let idx = Index::build("retention:\n  destination: { keep_last: 3, min_verified: 0 }\n");
        assert_eq!(
            idx.value("retention.destination.min_verified"),
            Some(Location {
                line: 2,
                column: 46
            })
        );
    }
}
