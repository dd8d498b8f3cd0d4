//! The aos profile: an AO-style module driven through several messages, `require`,
//! read-only `io`, blocked functions and determinism.

use std::path::PathBuf;

use moonjail::{Determinism, ErrorKind, HostFiles, Profile, Sandbox};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ao")
}

fn aos(deterministic: bool) -> Sandbox {
    Sandbox::builder()
        .profile(Profile::Aos)
        .host_files(
            HostFiles::default()
                .modules_dir(fixtures())
                .allow_read(fixtures().join("utils.lua").to_string_lossy()),
        )
        .deterministic(deterministic.then_some(Determinism {
            timestamp: 1_700_000_000,
            seed: 42,
        }))
        .build()
        .unwrap()
}

fn drive(sandbox: &Sandbox) -> Vec<Value> {
    let mut s = sandbox.session().unwrap();
    let src = std::fs::read(fixtures().join("process.lua")).unwrap();
    let out = s.exec(&src);
    assert!(out.is_ok(), "{:?}", out.result);
    let mut state = json!({});
    let mut outcomes = Vec::new();
    for msg in [
        json!({"Action": "Ping"}),
        json!({"Action": "Sum", "Data": "1,2,3"}),
        json!({"Action": "Ping"}),
        json!({"Action": "Eval", "Data": "return #Inbox + math.random(1, 1000)"}),
        json!({"Action": "Nope"}),
    ] {
        let out = s.call("compute", &[state.clone(), msg]);
        let result = out.result.clone().unwrap();
        state = result.clone();
        outcomes.push(json!({"result": result, "output": out.output}));
    }
    outcomes
}

#[test]
fn ao_module_handles_messages() {
    let outcomes = drive(&aos(true));
    let last = &outcomes[4]["result"];
    assert_eq!(last["pings"], json!(2));
    assert_eq!(last["total"], json!(6));
    assert_eq!(last["last"]["reply"], json!("no handler for Nope"));
    assert_eq!(last["last"]["inbox"], json!(5));
    // os.time was reassigned by the module to milliseconds of the supplied timestamp.
    assert_eq!(last["last"]["at"], json!(1_700_000_000_000i64));
    assert_eq!(outcomes[0]["result"]["last"]["reply"], json!("Pong 1"));
    assert_eq!(outcomes[1]["output"], json!("handled Sum\n"));
}

#[test]
fn deterministic_runs_are_byte_identical() {
    let a = serde_json::to_string(&drive(&aos(true))).unwrap();
    let b = serde_json::to_string(&drive(&aos(true))).unwrap();
    assert_eq!(a, b);
}

#[test]
fn require_resolution_order_and_errors() {
    let sb = aos(false);
    let out = sb.run(
        r#"
        package.preload["virtual"] = function(name, extra) return {name = name, extra = extra} end
        local v = require("virtual")
        local u1, path = require("utils")
        local u2 = require("utils")
        return {v = v, same = u1 == u2, path = path, loaded = package.loaded.utils == u1,
                g = package.loaded._G == _G, string = package.loaded.string == string,
                path_empty = package.path == "" and package.cpath == ""}
        "#,
        &Value::Null,
    );
    assert_eq!(
        out.result.unwrap(),
        json!({"v": {"name": "virtual", "extra": ":preload:"}, "same": true, "path": "utils.lua",
               "loaded": true, "g": true, "string": true, "path_empty": true})
    );
    for (code, fragment) in [
        (
            "require('missing.module')",
            "module 'missing.module' not found",
        ),
        ("require('../../etc/passwd')", "invalid module name"),
        ("require('/etc/passwd')", "invalid module name"),
        ("require(42)", "module '42' not found"),
    ] {
        let out = sb.run(code, &Value::Null);
        let e = out.error().unwrap();
        assert_eq!(e.kind, ErrorKind::Runtime, "{code}");
        assert!(e.message.contains(fragment), "{code}: {}", e.message);
    }
}

#[test]
fn io_reads_only_listed_files() {
    let sb = aos(false);
    let listed = fixtures().join("utils.lua").to_string_lossy().into_owned();
    let out = sb.run(
        r#"
        local path = ...
        local f = assert(io.open(path))
        local first = f:read("l")
        local rest = f:read("*a")
        f:close()
        local g = assert(io.open(path, "rb"))
        local n = 0
        for line in g:lines() do n = n + 1 end
        local w, werr = io.open(path, "w")
        local x, xerr = io.open("/etc/passwd")
        return {first = first, more = #rest > 0, lines = n, w = w == nil, werr = werr, x = x == nil, xerr = xerr}
        "#,
        &json!(listed),
    );
    let r = out.result.unwrap();
    assert_eq!(r["first"], json!("local utils = { _version = \"0.0.1\" }"));
    assert_eq!(r["lines"], json!(9));
    assert_eq!(r["w"], json!(true));
    assert!(r["werr"].as_str().unwrap().contains("only reading"));
    assert_eq!(r["xerr"], json!("/etc/passwd: No such file or directory"));
}

#[test]
fn blocked_functions_are_absent() {
    let sb = aos(false);
    let out = sb.run(
        r#"
        return {os.execute, os.exit, os.getenv, os.remove, os.rename, os.setlocale, os.tmpname,
                io.write, io.popen, io.tmpfile, io.output, io.input, io.lines, dofile, loadfile,
                debug, package.loadlib, package.searchers, collectgarbage, json}
        "#,
        &Value::Null,
    );
    assert_eq!(out.result.unwrap(), json!({}));
    let out = sb.run(
        "return {_G._G == _G, loadstring == load, unpack == table.unpack, math.huge > 0, math.pi > 3}",
        &Value::Null,
    );
    assert_eq!(out.result.unwrap(), json!([true, true, true, true, true]));
}

/// `package.loaded` holds every global library table of the profile under its name
/// (`_G` only where `_G` is a global), and nothing else but `package` itself: what
/// `require("string")` finds.
#[test]
fn package_loaded_holds_the_profile_s_library_tables() {
    let script = r#"
        local expected, got = {}, {}
        for k, v in pairs(_ENV) do
            if type(k) == "string" and type(v) == "table" and k ~= "_G" then
                expected[#expected + 1] = k
            end
        end
        if rawget(_ENV, "_G") ~= nil then expected[#expected + 1] = "_G" end
        for k, v in pairs(package.loaded) do
            assert(rawget(_ENV, k) == v, k)
            got[#got + 1] = k
        end
        table.sort(expected) table.sort(got)
        return {expected = table.concat(expected, " "), got = table.concat(got, " ")}
    "#;
    let mut checked = 0;
    for profile in Profile::ALL {
        for deterministic in [
            None,
            Some(Determinism {
                timestamp: 1,
                seed: 2,
            }),
        ] {
            let sandbox = Sandbox::builder()
                .profile(profile)
                .deterministic(deterministic)
                .build()
                .unwrap();
            let out = sandbox.run(script, &Value::Null);
            let Ok(result) = &out.result else {
                // A profile without `package` has nothing to check.
                assert!(
                    sandbox.run("return package", &Value::Null).result.ok() == Some(Value::Null),
                    "{profile:?}: {:?}",
                    out.result
                );
                continue;
            };
            checked += 1;
            assert_eq!(result["got"], result["expected"], "{profile:?}: {result}");
            assert!(
                result["got"].as_str().unwrap().contains("string"),
                "{profile:?}: {result}"
            );
        }
    }
    assert!(checked >= 4, "standard and aos, both ways: {checked}");
}
