//! The regions and product catalogue the simulator serves, taken from the provider reference's
//! examples (`DescribeRegins` sample) and the real catalogue recorded in the notes
//! (`docs/cds-api.md` §2.3).

use crate::cds::model::{
    Architecture, ComputeRole, CpuRam, DbConfigCatalog, NetworkLink, Product, Region, Standards,
};

/// (CityId, CityName, RegionId, RegionName, SiteName), as in the reference's sample.
const REGIONS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "3082f45e-306e-11e7-9796-0050569b4d9c",
        "洛杉矶",
        "US_LosAngeles_A",
        "北美地区",
        "洛杉矶1",
    ),
    (
        "7b98a5d1-306e-11e7-9796-0050569b4d9c",
        "法兰克福",
        "EUR_Germany_A",
        "欧洲地区",
        "德国1",
    ),
    (
        "8737606f-306d-11e7-9796-0050569b4d9c",
        "东京",
        "APAC_Tokyo_A",
        "亚太地区",
        "东京1",
    ),
    (
        "27b57297-306d-11e7-9796-0050569b4d9c",
        "香港",
        "CN_Hongkong_A",
        "亚太地区",
        "香港1",
    ),
    (
        "a8937b00-306d-11e7-9796-0050569b4d9c",
        "新加坡",
        "APAC_Singapore_A",
        "亚太地区",
        "新加坡1",
    ),
    (
        "5c432e0e-306e-11e7-9796-0050569b4d9c",
        "阿姆斯特丹",
        "EUR_Netherlands_A",
        "欧洲地区",
        "荷兰1",
    ),
    (
        "154ed19e-306e-11e7-9796-0050569b4d9c",
        "纽约",
        "US_NewYork_A",
        "北美地区",
        "纽约1",
    ),
    (
        "ea3ca775-306c-11e7-9796-0050569b4d9c",
        "北京",
        "CN_Beijing_B",
        "中国大陆",
        "北京2",
    ),
    (
        "ea3ca775-306c-11e7-9796-0050569b4d9c",
        "北京",
        "CN_Beijing_E",
        "中国大陆",
        "北京5",
    ),
    (
        "ea3ca775-306c-11e7-9796-0050569b4d9c",
        "北京",
        "CN_Beijing_A",
        "中国大陆",
        "北京1",
    ),
    (
        "e48e2312-306d-11e7-9796-0050569b4d9c",
        "达拉斯",
        "US_Dallas_A",
        "北美地区",
        "达拉斯1",
    ),
    (
        "713d3745-306d-11e7-9796-0050569b4d9c",
        "台北",
        "CN_Taipei_A",
        "亚太地区",
        "台北1",
    ),
    (
        "123d0d01-306d-11e7-9796-0050569b4d9c",
        "无锡",
        "CN_Wuxi_A",
        "中国大陆",
        "无锡1",
    ),
    (
        "87fcbbd6-be0a-11e7-9d6b-0242ac110004",
        "首尔",
        "APAC_Seoul_A",
        "亚太地区",
        "首尔1",
    ),
    (
        "ea3ca775-306c-11e7-9796-0050569b4d9c",
        "北京",
        "CN_Beijing_C",
        "中国大陆",
        "北京3",
    ),
    (
        "c11a5abe-3f7e-11e7-86b1-0242ac11000e",
        "广州",
        "CN_Guangzhou_A",
        "中国大陆",
        "广州1",
    ),
    (
        "b44355d0-65e7-11e7-8ea9-0050569b651c",
        "上海",
        "CN_Shanghai_A",
        "中国大陆",
        "上海1",
    ),
    // The sample really has an entry with an empty RegionId.
    (
        "ea3ca775-306c-11e7-9796-0050569b4d9c",
        "北京",
        "",
        "中国大陆",
        "北京8",
    ),
];

pub fn regions() -> Vec<Region> {
    REGIONS
        .iter()
        .map(|(city_id, city, region, region_name, site)| Region {
            city_id: city_id.to_string(),
            city_name: city.to_string(),
            // The notes record US_NewYork_A as not on sale in the real catalogue.
            is_saling: i64::from(*region != "US_NewYork_A"),
            region_id: region.to_string(),
            region_name: region_name.to_string(),
            site_name: site.to_string(),
        })
        .collect()
}

pub fn region_exists(region_id: &str) -> bool {
    !region_id.is_empty() && REGIONS.iter().any(|r| r.2 == region_id)
}

/// One orderable spec: (version, architecture type, RAM GB, PaasGoodsId).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub version: &'static str,
    pub architecture_type: i64,
    pub ram_gb: i64,
}

/// (version, architecture type, sub-product name, RAM sizes in GB, first PaasGoodsId); ids step by 3.
const FAMILIES: &[(&str, i64, &str, &[i64], i64)] = &[
    (
        "2.8",
        3,
        "Redis 经济型主从",
        &[1, 2, 4, 8, 16, 32, 64],
        12461,
    ),
    (
        "4.0",
        3,
        "Redis 经济型主从",
        &[1, 2, 4, 8, 16, 32, 64],
        18509,
    ),
    (
        "4.0",
        2,
        "Redis 集群版",
        &[8, 12, 20, 32, 64, 128, 256],
        20675,
    ),
    ("5.0", 1, "Redis 主从版", &[1, 2, 4, 8, 16, 32, 64], 12923),
    (
        "5.0",
        2,
        "Redis 集群版",
        &[8, 12, 20, 32, 64, 128, 256],
        13385,
    ),
];

fn architecture_name(t: i64) -> &'static str {
    match t {
        1 => "主从版",
        2 => "集群版",
        _ => "经济型主从",
    }
}

/// Looks up a PaasGoodsId.
pub fn offer(paas_goods_id: i64) -> Option<Offer> {
    FAMILIES.iter().find_map(|(version, arch, _, rams, first)| {
        rams.iter().enumerate().find_map(|(i, ram)| {
            (first + 3 * i as i64 == paas_goods_id).then_some(Offer {
                version,
                architecture_type: *arch,
                ram_gb: *ram,
            })
        })
    })
}

pub fn sub_product_name(architecture_type: i64) -> &'static str {
    match architecture_type {
        1 => "Redis 主从版",
        2 => "Redis 集群版",
        _ => "Redis 经济型主从",
    }
}

pub fn catalogue(region_id: &str) -> DbConfigCatalog {
    let mut products: Vec<Product> = Vec::new();
    for (version, arch, sub_name, rams, first) in FAMILIES {
        let architecture = Architecture {
            architecture_name: architecture_name(*arch).to_string(),
            architecture_type: *arch,
            compute_roles: vec![ComputeRole {
                compute_name: "通用型".into(),
                compute_type: 0,
                standards: Standards {
                    attach_disk: vec![serde_json::json!({
                        "BasicIops": "", "DiskMax": 2000, "DiskMaxExpand": 2000, "DiskMin": 100,
                        "DiskName": "SSD", "DiskStep": 100, "DiskUnit": "G", "DiskValue": "ssd_disk"
                    })],
                    cpu_ram: rams
                        .iter()
                        .enumerate()
                        .map(|(i, ram)| CpuRam {
                            cpu: 0,
                            name: format!("{ram}G"),
                            paas_goods_id: first + 3 * i as i64,
                            ram: *ram,
                        })
                        .collect(),
                },
            }],
            engines_type: serde_json::json!([]),
            network_links: vec![NetworkLink {
                desc_detail:
                    "默认链路：服务实例占用VDC私有网络IP地址，适用于对延迟敏感类型的应用。".into(),
                link_type: "default_link".into(),
                name: "默认链路".into(),
            }],
            sub_product_name: sub_name.to_string(),
        };
        match products.iter_mut().find(|p| p.version == *version) {
            Some(p) => p.architectures.push(architecture),
            None => products.push(Product {
                version: version.to_string(),
                architectures: vec![architecture],
            }),
        }
    }
    DbConfigCatalog {
        product_name: "redis".into(),
        region_id: region_id.to_string(),
        products,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goods_ids_follow_the_real_catalogue() {
        assert_eq!(
            offer(12461),
            Some(Offer {
                version: "2.8",
                architecture_type: 3,
                ram_gb: 1
            })
        );
        assert_eq!(
            offer(13403),
            Some(Offer {
                version: "5.0",
                architecture_type: 2,
                ram_gb: 256
            })
        );
        assert_eq!(offer(12462), None);
        assert_eq!(regions().len(), 18);
        assert!(region_exists("CN_Beijing_A"));
        assert!(!region_exists(""));
    }
}
