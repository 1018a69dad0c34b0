//! Several passwords open one repository; changing one rewrites one key file.
#![cfg(target_os = "linux")]

use backazon_e2e::*;

/// The id of the key file in use (`current`) or of another one, from `key list --json`.
fn key_id(keys: &serde_json::Value, current: bool) -> String {
    let k = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == current)
        .unwrap();
    k["id"].as_str().unwrap().to_string()
}

#[test]
fn add_list_change_and_remove_passwords() {
    let env = Env::init("keys");
    let src = env.dir.join("src");
    write(&src.join("f"), b"data");
    env.backup(&[&src], &[]);

    let second = env.dir.join("second-pw");
    write(&second, b"a second password\n");
    env.run(&[
        "key",
        "add",
        "--new-password-file",
        second.to_str().unwrap(),
    ])
    .ok();
    let keys = env.run(&["key", "list", "--json"]).ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    for k in keys.as_array().unwrap() {
        assert!(k["rounds"].as_u64().unwrap() >= 600_000);
        assert_eq!(k["kdf"], "pbkdf2-hmac-sha256");
    }
    let with_second = |args: &[&str]| {
        Run::from_output(
            env.command()
                .env("BACKAZON_PASSWORD", "a second password")
                .args(args),
        )
    };
    let snaps = with_second(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 1);

    // The key in use cannot be removed; another can.
    let current = key_id(&keys, true);
    let other = key_id(&keys, false);
    let r = env.run(&["key", "remove", &current[..10]]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("refusing to remove the key file this password opened"),
        "{}",
        r.stderr
    );

    // Change the second password; the old one stops working, the data stays.
    let third = env.dir.join("third-pw");
    write(&third, b"third\n");
    Run::from_output(
        env.command()
            .env("BACKAZON_PASSWORD", "a second password")
            .args([
                "key",
                "passwd",
                "--new-password-file",
                third.to_str().unwrap(),
            ]),
    )
    .ok();
    assert_eq!(with_second(&["snapshots"]).code, 1);
    let out = env.dir.join("out");
    Run::from_output(env.command().env("BACKAZON_PASSWORD", "third").args([
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(
        std::fs::read(out.join(src.strip_prefix("/").unwrap()).join("f")).unwrap(),
        b"data"
    );

    env.run(&["key", "list"]).ok();
    let keys = env.run(&["key", "list", "--json"]).ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(keys
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["id"] != other.as_str()));
    let newest = key_id(&keys, false);
    env.run(&["key", "remove", &newest[..12]]).ok();
    assert_eq!(
        Run::from_output(
            env.command()
                .env("BACKAZON_PASSWORD", "third")
                .arg("snapshots")
        )
        .code,
        1
    );
    env.run(&["snapshots"]).ok();
}
