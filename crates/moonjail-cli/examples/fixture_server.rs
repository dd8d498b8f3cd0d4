//! A tiny weather API on 127.0.0.1 for `examples/agent_http.lua`, with nothing but std.
//!
//! ```sh
//! cargo run --example fixture_server -- 8765      # then, in another shell:
//! cargo run -- run examples/agent_http.lua --allow-http 127.0.0.1:8765 --input '{"city": "Lyon"}'
//! ```
//!
//! `GET /weather?city=NAME` answers `{"city", "forecast", "temperature_c"}` for Lyon,
//! Paris and Oslo, and 404 otherwise. The CLI tests start this same server in-process.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

/// Binds 127.0.0.1:`port` (0: any free port) and serves on a background thread; returns
/// the port.
pub fn start(port: u16) -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || serve(listener));
    Ok(port)
}

/// Answers connections until the process ends.
pub fn serve(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = handle(stream);
        });
    }
}

fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers (GET requests only: no body to read).
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = respond(target);
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The status line's tail and the JSON body for a request target.
pub fn respond(target: &str) -> (&'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/weather" {
        return (
            "404 Not Found",
            r#"{"error": "no such endpoint"}"#.to_string(),
        );
    }
    let city = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("city="))
        .unwrap_or("")
        .replace("%20", " ")
        .replace('+', " ");
    let (forecast, temperature) = match city.as_str() {
        "Lyon" => ("sunny", 21),
        "Paris" => ("cloudy", 17),
        "Oslo" => ("snow", -3),
        _ => return ("404 Not Found", r#"{"error": "unknown city"}"#.to_string()),
    };
    let body = format!(
        r#"{{"city": "{city}", "forecast": "{forecast}", "temperature_c": {temperature}}}"#
    );
    ("200 OK", body)
}

#[allow(dead_code)] // (when the CLI tests include this file as a module)
fn main() -> std::io::Result<()> {
    let port = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "usage: fixture_server [PORT]",
            )
        })?,
        None => 8765,
    };
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!(
        "serving the weather fixture on http://127.0.0.1:{}/weather?city=Lyon",
        listener.local_addr()?.port()
    );
    serve(listener);
    Ok(())
}
