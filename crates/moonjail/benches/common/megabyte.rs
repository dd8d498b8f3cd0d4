//! The lint bench's megabyte, shared with the `lint_cost` example (included by `#[path]`:
//! benches and examples are separate crates).

/// About 1 MB of real Lua: copies of a real module (rxi's json.lua, from the lint
/// corpus), each in its own block.
pub fn megabyte() -> String {
    let module = include_str!("../../tests/lint_corpus/json.lua");
    let body = module.replace("return json", "M = json");
    let mut source = String::new();
    while source.len() < 1 << 20 {
        source.push_str("do\n");
        source.push_str(&body);
        source.push_str("\nend\n");
    }
    source
}
