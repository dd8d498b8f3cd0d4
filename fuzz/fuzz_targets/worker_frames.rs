//! Arbitrary bytes as the stream a (compromised) worker writes to its supervisor, read
//! the way `Channel::recv` reads it: in chunks, decoding from the front of a buffer and
//! draining each whole frame. `Done` and `HostCall` frames then go through what the
//! supervisor does with them (`decode_done`, `host_call::answer`).
//!
//! Must hold: no panic; no frame, and no `Need`, past the reader's maximum (the reader
//! reserves what `Need` asks for, so that is the allocation bound); every accepted frame
//! re-encodes to exactly the bytes it was read from; a prefix of an accepted frame asks
//! for more rather than failing; errors are values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moonjail::fuzzing::{decode_frame, FrameResult};

fuzz_target!(|data: &[u8]| {
    // Byte 0: the reader's maximum (small ones so that the limit is hit, and a large one);
    // byte 1: the read size. The rest is the stream.
    let [max_sel, chunk, stream @ ..] = data else {
        return;
    };
    let max = match max_sel % 4 {
        0 => 2 + usize::from(*max_sel / 4),
        1 => 64,
        2 => 4096,
        _ => 1 << 20,
    };
    let chunk = usize::from(*chunk).max(1);
    let mut buffer: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        match decode_frame(&buffer, max) {
            Err(_) => return,
            Ok(FrameResult::Need(need)) => {
                assert!(
                    need > buffer.len(),
                    "Need({need}) with {} bytes",
                    buffer.len()
                );
                assert!(
                    need <= 4 || need - 4 <= max,
                    "Need({need}) past the maximum of {max}"
                );
                if fed == stream.len() {
                    return;
                }
                let end = (fed + chunk).min(stream.len());
                buffer.extend_from_slice(&stream[fed..end]);
                fed = end;
            }
            Ok(FrameResult::Frame(frame)) => {
                assert!(frame.used <= buffer.len());
                assert!(frame.used - 4 <= max, "a frame of {} bytes", frame.used);
                assert_eq!(frame.encoded_len, frame.used);
                assert_eq!(
                    frame.reencoded,
                    &buffer[..frame.used],
                    "re-encoding changed the frame"
                );
                for cut in [0, 1, 3, 4, 5, 6, frame.used / 2, frame.used - 1] {
                    if cut < frame.used {
                        match decode_frame(&buffer[..cut], max) {
                            Ok(FrameResult::Need(n)) => assert!(n > cut && n <= frame.used),
                            other => panic!("prefix of {cut} bytes: {other:?}"),
                        }
                    }
                }
                if let Some(Ok(handled)) = &frame.handled {
                    assert!(!handled.is_empty());
                }
                buffer.drain(..frame.used);
            }
        }
    }
});
