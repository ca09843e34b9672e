#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal of a given size, the way a person's terminal would, and
reports what that person would see at the end.

The command believes it has a terminal (stdin, stderr and, unless --stdout is given, stdout
are the pty's slave; the window size is set before it starts, so `ioctl(TIOCGWINSZ)` and
COLUMNS agree). Every byte it writes is captured raw; the bytes are then replayed through pyte
(a VT100/xterm emulator) and the final screen is read back.

usage: pty_screen.py --cols N --rows N --raw FILE [--stdout FILE] -- COMMAND [ARG ...]
Prints one JSON object: {"code": exit code, "screen": [each screen row, cols wide]}. The raw
stream is written to --raw. With --stdout, the command's stdout goes to that file instead (so
stdout is not a terminal while stderr is).
"""
import argparse
import fcntl
import json
import os
import pty
import struct
import sys
import termios

import pyte


def run(argv, cols, rows, stdout_file):
    pid, master = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.environ["COLUMNS"] = str(cols)
        os.environ["LINES"] = str(rows)
        os.environ.setdefault("TERM", "xterm-256color")
        if stdout_file:
            fd = os.open(stdout_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.close(fd)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    raw = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the slave side closed (the command and its children ended)
            break
        if not chunk:
            break
        raw.extend(chunk)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return os.waitstatus_to_exitcode(status), bytes(raw)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cols", type=int, required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--stdout")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    code, raw = run(command, args.cols, args.rows, args.stdout)
    with open(args.raw, "wb") as f:
        f.write(raw)
    screen = pyte.Screen(args.cols, args.rows)
    # The pty turns "\n" into "\r\n" (onlcr), as a real terminal's line discipline does.
    pyte.ByteStream(screen).feed(raw)
    json.dump({"code": code, "screen": screen.display}, sys.stdout)


if __name__ == "__main__":
    main()
