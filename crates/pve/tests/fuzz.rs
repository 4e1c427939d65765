//! Property-based fuzzing of the PVE text formats: UPIDs, form encoding,
//! property strings, sizes and every named schema format. No input
//! panics; where a printer exists, printing then parsing gives the value
//! back. Budget: `PROPTEST_CASES` (256 by default; `make fuzz` 100 000).

use homestak_pve::PropertyString;
use homestak_pve::Upid;
use homestak_pve::form::{decode_sshkeys, encode_component, encode_sshkeys};
use homestak_pve::schema::formats::{self, Named, format_size, parse_size};
use homestak_pve::schema::qemu_dicts;
use homestak_pve::schema::wire::{self, Value};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text biased to the separators PVE's formats split on.
fn pveish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::sample::select(vec![
                ":", ",", "=", ";", "&", "%", "%2", "%zz", "%20", "+", "/", "UPID", "pve",
                "qmcreate", "root@pam", "!", "0", "1", "ff", "FFFFFFFF", "virtio", "bridge",
                "vmbr0", "local-lvm:vm-100-disk-0", "32G", "1.5T", "-", ".", " ", "\n", "é",
                "[", "]", "::1", "10.0.0.1/24", "gw", "ip", "dhcp", "size",
            ])
            .prop_map(String::from),
            1 => any::<char>().prop_map(String::from),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

const NAMED: &[Named] = &[
    Named::PveVmid,
    Named::PveNode,
    Named::DnsName,
    Named::PveStorageId,
    Named::PveConfigid,
    Named::PveConfigidList,
    Named::PveTagList,
    Named::Urlencoded,
    Named::AddressList,
    Named::PveUserid,
    Named::PveRealm,
    Named::PveIface,
    Named::PveIfaceList,
    Named::PveBridgeId,
    Named::Ipv4,
    Named::Ipv6,
    Named::Ipv4Mask,
    Named::CidrV4,
    Named::CidrV6,
    Named::MacAddr,
    Named::PveStorageContent,
    Named::PveStorageContentList,
    Named::PveVolumeId,
    Named::PveVolumeIdOrQmPath,
    Named::PveVolumeIdOrAbsolutePath,
    Named::PveQmIde,
    Named::PveQmBootdisk,
    Named::PveHotplugFeatures,
    Named::DiskSize,
    Named::PvePrivList,
    Named::PveIpv4Config,
    Named::PveIpv6Config,
    Named::BootLegacy,
    Named::BootOrder,
];

/// A well-formed UPID (`UPID:node:pid:pstart:starttime:type:id:user:`).
fn upid() -> impl Strategy<Value = String> {
    (
        "[a-z]([a-z0-9-]{0,8}[a-z0-9])?",
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        "[a-z]{2,10}",
        prop_oneof![Just(String::new()), "[0-9]{3,6}", "[a-z0-9.-]{1,12}"],
        prop_oneof![
            Just("root@pam".to_string()),
            Just("root@pam!homestak".to_string()),
            "[a-z]{1,8}@[a-z]{2,6}"
        ],
    )
        .prop_map(|(node, pid, pstart, start, kind, id, user)| {
            format!("UPID:{node}:{pid:08X}:{pstart:08X}:{start:08X}:{kind}:{id}:{user}:")
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_upid_text(text in pveish()) {
        if let Ok(upid) = text.parse::<Upid>() {
            // What parses prints back to a UPID that parses the same.
            let again: Upid = upid.to_string().parse().expect("a printed UPID parses");
            prop_assert_eq!(again, upid);
        }
    }

    #[test]
    fn fuzz_upid_round_trip(text in upid()) {
        let upid: Upid = text.parse().expect("a well-formed UPID parses");
        prop_assert_eq!(upid.to_string(), text);
        let _ = (upid.node(), upid.kind(), upid.id(), upid.user(), upid.vmid());
    }

    #[test]
    fn fuzz_form_values_survive_pve_decoding(value in ".{1,40}", raw in pveish()) {
        // Our encoding, as PVE's decode_urlencoded reads it.
        let input = wire::decode_urlencoded(&format!("k={}", encode_component(&value)));
        prop_assert_eq!(input.get("k"), Some(&Value::Str(value.clone())));
        prop_assert_eq!(decode_sshkeys(&encode_sshkeys(&value)), value);
        // And any text at all decodes without a panic.
        let _ = wire::decode_urlencoded(&raw);
        let _ = wire::decode_component(&raw);
        let _ = wire::unescape_path(&raw);
        let _ = wire::decode_json(raw.as_bytes());
    }

    #[test]
    fn fuzz_property_strings(text in pveish()) {
        let parsed = PropertyString::parse(&text);
        // Printing a parsed string and parsing it again is stable.
        prop_assert_eq!(PropertyString::parse(&parsed.to_string()), parsed);
        let drives = ["scsi0", "virtio0", "ide2", "sata1"]
            .into_iter()
            .filter_map(qemu_dicts::drive);
        for dict in [
            qemu_dicts::net(),
            qemu_dicts::ipconfig(),
            qemu_dicts::agent(),
            qemu_dicts::memory(),
            qemu_dicts::efidisk(),
            qemu_dicts::tpmstate(),
        ]
        .into_iter()
        .chain(drives)
        {
            let _ = formats::parse_property_string(dict, &text, "fuzz");
        }
    }

    #[test]
    fn fuzz_property_string_round_trip(
        items in proptest::collection::vec(("[a-z]{1,8}", "[a-zA-Z0-9:./_-]{1,12}"), 0..6),
    ) {
        let mut built = PropertyString::new();
        for (key, value) in &items {
            built = built.kv(key, value.clone());
        }
        prop_assert_eq!(PropertyString::parse(&built.to_string()), built);
    }

    #[test]
    fn fuzz_sizes_and_named_formats(text in pveish(), bytes in 0u64..(1 << 50)) {
        let _ = parse_size(&text);
        let _ = homestak_pve::types::parse_size(&text);
        for named in NAMED {
            let _ = named.check(&text);
        }
        // Sizes PVE writes read back exactly.
        prop_assert_eq!(parse_size(&format_size(bytes)), Some(bytes));
    }
}
