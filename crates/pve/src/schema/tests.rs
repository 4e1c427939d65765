//! Validator tests: PVE texts for missing, unknown and malformed parameters.
use super::*;

fn input(pairs: &[(&str, &str)]) -> Input {
    let mut i = Input::default();
    for (k, v) in pairs {
        i.insert(k, Value::Str((*v).to_string()));
    }
    i
}

#[test]
fn unknown_path_is_not_implemented() {
    let err = validate(Method::Get, "/foo", &Input::default()).unwrap_err();
    assert_eq!(
        err,
        Rejection::NotImplemented("Method 'GET /foo' not implemented".into())
    );
    let err = validate(Method::Put, "/version", &Input::default()).unwrap_err();
    assert!(matches!(err, Rejection::NotImplemented(_)));
}

#[test]
fn nextid_errors_match_recorded_pve() {
    let Rejection::Params(e) =
        validate(Method::Get, "/cluster/nextid", &input(&[("vmid", "99")])).unwrap_err()
    else {
        panic!("expected a parameter error")
    };
    assert_eq!(
        e["vmid"],
        "invalid format - value does not look like a valid VM ID\n"
    );
    let Rejection::Params(e) =
        validate(Method::Get, "/cluster/nextid", &input(&[("vmid", "x")])).unwrap_err()
    else {
        panic!("expected a parameter error")
    };
    assert_eq!(e["vmid"], "type check ('integer') failed - got 'x'");
}

#[test]
fn unknown_and_missing_parameters() {
    let Rejection::Params(e) =
        validate(Method::Post, "/nodes/pve/qemu", &input(&[("bogus", "1")])).unwrap_err()
    else {
        panic!("expected a parameter error")
    };
    assert!(e["bogus"].starts_with("property is not defined in schema"));
    assert_eq!(e["vmid"], "property is missing and it is not optional");
}

#[test]
fn property_string_errors_carry_the_path() {
    let Rejection::Params(e) = validate(
        Method::Post,
        "/nodes/pve/qemu",
        &input(&[("vmid", "100"), ("ipconfig0", "ip=dhcp,gw=x")]),
    )
    .unwrap_err() else {
        panic!("expected a parameter error")
    };
    assert_eq!(
        e["ipconfig0"],
        "invalid format - format error\nipconfig0.gw: invalid format - value does not look like a valid IPv4 address\n\n"
    );
    let Rejection::Params(e) = validate(
        Method::Post,
        "/nodes/pve/qemu",
        &input(&[("vmid", "100"), ("net0", "bogus")]),
    )
    .unwrap_err() else {
        panic!("expected a parameter error")
    };
    assert!(
        e["net0"].contains("net0.model: value 'bogus' does not have a value in the enumeration"),
        "{}",
        e["net0"]
    );
}

#[test]
fn indexed_options_respect_ranges() {
    let ok = validate(
        Method::Post,
        "/nodes/pve/qemu",
        &input(&[
            ("vmid", "100"),
            ("scsi30", "local-zfs:4"),
            ("net0", "virtio,bridge=vmbr0"),
        ]),
    );
    assert!(ok.is_ok(), "{ok:?}");
    let err = validate(
        Method::Post,
        "/nodes/pve/qemu",
        &input(&[("vmid", "100"), ("scsi31", "local-zfs:4")]),
    );
    assert!(matches!(err, Err(Rejection::Params(e)) if e.contains_key("scsi31")));
}

#[test]
fn path_parameters_are_validated_and_conflicts_refused() {
    let err = validate(Method::Get, "/nodes/pve/qemu/abc/config", &Input::default()).unwrap_err();
    assert!(matches!(err, Rejection::Params(e) if e["vmid"].starts_with("type check")));
    let err = validate(
        Method::Get,
        "/nodes/pve/qemu/100/config",
        &input(&[("vmid", "101")]),
    )
    .unwrap_err();
    assert!(matches!(err, Rejection::Params(e) if e["vmid"].starts_with("duplicate parameter")));
}

#[test]
#[cfg(feature = "testing")]
fn wire_check_catches_unescaped_equals() {
    // An unescaped `=` truncates the value: `import-from` is left as a
    // second key-less part, which PVE refuses.
    let err = check_wire(
        "POST",
        "/api2/json/nodes/pve/qemu",
        None,
        Some((
            "application/x-www-form-urlencoded",
            b"vmid=100&scsi0=local-zfs:0,import-from=local:import/x.qcow2",
        )),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Rejection::Params(BTreeMap::from([(
            "scsi0".to_string(),
            "invalid format - duplicate key in comma-separated list property: file\n".to_string()
        )]))
    );
    let ok = check_wire(
        "POST",
        "/api2/json/nodes/pve/qemu",
        None,
        Some((
            "application/x-www-form-urlencoded",
            b"vmid=100&scsi0=local-zfs%3A0%2Cimport-from%3Dlocal%3Aimport%2Fx.qcow2",
        )),
    )
    .unwrap();
    assert_eq!(
        ok.str("scsi0"),
        Some("local-zfs:0,import-from=local:import/x.qcow2")
    );
    let err = check_wire("GET", "/api2/json/nodes/pve/qemu", Some("full=maybe"), None).unwrap_err();
    assert!(
        matches!(err, Rejection::Params(e) if e["full"] == "type check ('boolean') failed - got 'maybe'")
    );
}

#[test]
fn patterns_match_whole_values() {
    assert!(Pattern::ResizeSize.matches("+1G"));
    assert!(Pattern::ResizeSize.matches("10.5"));
    assert!(!Pattern::ResizeSize.matches("1GB"));
    assert!(Pattern::Serial.matches("socket"));
    assert!(!Pattern::Serial.matches("sockets"));
    assert!(Pattern::TokenId.matches("homestak"));
    assert!(!Pattern::TokenId.matches("1abc"));
    assert!(Pattern::VmGenId.matches("69fef421-a21c-4376-a9e6-b1fd6d908dcb"));
}
