//! Objects show per-run numbers, never host addresses: `tostring`, `print`,
//! `string.format`'s `%s` and `%p` (issue 9, item 3).

use std::time::Duration;

use moonjail::{Profile, Sandbox};
use serde_json::{json, Value as Json};

fn sandbox(profile: Profile) -> Sandbox {
    Sandbox::builder()
        .profile(profile)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a valid configuration")
}

fn run(sb: &Sandbox, src: &str) -> (Json, String) {
    let out = sb.run(src.as_bytes(), &Json::Null);
    match out.result {
        Ok(v) => (v, out.output),
        Err(e) => panic!("{src} failed: {e:?}"),
    }
}

/// `0x` and 8 or more lowercase hex digits, with the value small (a counter).
fn is_opaque(s: &str) -> bool {
    let Some(hex) = s.strip_prefix("0x") else {
        return false;
    };
    hex.len() == 8
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        && u64::from_str_radix(hex, 16).is_ok_and(|n| n < 1 << 20)
}

#[test]
fn tostring_print_and_format_show_numbers() {
    for p in [Profile::Minimal, Profile::Standard, Profile::Aos] {
        let sb = sandbox(p);
        let src = r#"
            local t, f, co = {}, function() end, coroutine and coroutine.running() or print
            print(t, print)
            return {tostring(t), tostring(f), tostring(print), tostring(co),
                    string.format("%s|%p", t, t), ("%p"):format(print),
                    tostring(t) == tostring(t), tostring(t) ~= tostring({})}
        "#;
        let (v, output) = run(&sb, src);
        let a: Vec<&str> = v
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(Json::as_str)
            .collect();
        assert_eq!(a.len(), 6, "{v}");
        let t = a[0].strip_prefix("table: ").expect("table: ...");
        assert!(is_opaque(t), "{}", a[0]);
        assert!(
            is_opaque(a[1].strip_prefix("function: ").expect("function")),
            "{}",
            a[1]
        );
        assert!(
            is_opaque(a[2].strip_prefix("function: ").expect("function")),
            "{}",
            a[2]
        );
        assert!(a[3].starts_with("thread: ") || a[3].starts_with("function: "));
        assert_eq!(a[4], format!("table: {t}|{t}"));
        assert_eq!(a[5], &a[2]["function: ".len()..]);
        assert_eq!(output, format!("{}\t{}\n", a[0], a[2]));
        assert_eq!(v[6], json!(true));
        assert_eq!(v[7], json!(true));
    }
}

#[test]
fn identities_are_the_same_from_run_to_run() {
    let sb = sandbox(Profile::Standard);
    let src =
        "local a, b = {}, {} return tostring(a) .. ' ' .. tostring(print) .. ' ' .. tostring(b)";
    let (first, _) = run(&sb, src);
    let (second, _) = run(&sb, src);
    assert_eq!(first, second);
}

#[test]
fn format_p_keeps_width_and_null() {
    let sb = sandbox(Profile::Standard);
    let (v, _) = run(
        &sb,
        "local t = {} return {('%p'):format(nil), ('%20p|'):format(t), ('%-20p|'):format(t), \
         ('%p'):format(t)}",
    );
    assert_eq!(v[0], json!("(null)"));
    let id = v[3].as_str().expect("a string");
    assert!(is_opaque(id), "{id}");
    assert_eq!(v[1], json!(format!("{id:>20}|")));
    assert_eq!(v[2], json!(format!("{id:<20}|")));
}

#[test]
fn tostring_keeps_stock_behaviour_for_the_rest() {
    let sb = sandbox(Profile::Standard);
    let (v, _) = run(
        &sb,
        r#"return {tostring(1), tostring(1.5), tostring(-0.0), tostring(nil), tostring(true),
                  tostring("s"), tostring(setmetatable({}, {__tostring = function() return "x" end})),
                  (tostring(setmetatable({}, {__name = "My.Type"})):gsub("0x%x+", "ADDR")),
                  select(2, pcall(tostring)),
                  select(2, pcall(tostring, setmetatable({}, {__tostring = function() return {} end})))}"#,
    );
    assert_eq!(
        v,
        json!([
            "1",
            "1.5",
            "-0.0",
            "nil",
            "true",
            "s",
            "x",
            "My.Type: ADDR",
            "bad argument #1 to 'tostring' (value expected)",
            "'__tostring' must return a string"
        ])
    );
}
