//! Neutralising terminal control sequences in a sandbox's output, for when it is forwarded
//! to a terminal (`stockade run` without `-t`, stdout or stderr a terminal). Output that
//! goes to a pipe or a file is never filtered.
//!
//! The rule, byte stream in, byte stream out:
//!
//! - passed unchanged: printable ASCII (0x20–0x7E), tab, newline and carriage return, and
//!   (in a UTF-8 locale) every well-formed UTF-8 sequence of a code point from U+00A0 up;
//! - every other C0 control and DEL are shown in caret notation: `^@` … `^_`, `^?` (ESC is
//!   `^[`, BEL `^G`, backspace `^H`). With ESC shown as text, the rest of an ESC, CSI, OSC
//!   or DCS sequence reaches the terminal as plain characters: `ESC ]0;x BEL` prints
//!   `^[]0;x^G`, `ESC [2J` prints `^[[2J`;
//! - C1 controls U+0080–U+009F (which some terminals obey like ESC sequences, U+009B as
//!   CSI) are shown as `M-` and the caret form of the code point minus 0x80, as `cat -v`
//!   does (U+009B is `M-^[`);
//! - bytes that are not part of well-formed UTF-8 (stray continuation bytes 0x80–0xBF,
//!   overlong forms, surrogates, truncated sequences at the end of the stream) are shown as
//!   `\xNN`; outside a UTF-8 locale every byte from 0x80 up is.
//!
//! So the terminal never receives ESC, any other C0 control but tab, newline and carriage
//! return, DEL, or a C1 control, either as a code point or as a raw byte outside a
//! well-formed multi-byte sequence. The filter keeps at most three bytes of an unfinished
//! UTF-8 sequence between writes, so a sequence split across reads is judged whole.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

/// The streaming filter (pure): feed it chunks, then [`Neutralizer::finish`].
#[derive(Debug, Clone)]
pub struct Neutralizer {
    utf8: bool,
    /// The start of a UTF-8 sequence the next chunk may complete.
    pending: Vec<u8>,
}

impl Neutralizer {
    /// A filter for a terminal whose character set is UTF-8 (`utf8`) or not.
    pub fn new(utf8: bool) -> Neutralizer {
        Neutralizer {
            utf8,
            pending: Vec::new(),
        }
    }

    /// Appends the neutralised form of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if !self.utf8 {
            input.iter().for_each(|&b| push_byte(b, out));
            return;
        }
        let joined;
        let mut rest: &[u8] = if self.pending.is_empty() {
            input
        } else {
            self.pending.extend_from_slice(input);
            joined = std::mem::take(&mut self.pending);
            &joined
        };
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    push_str(s, out);
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    push_str(std::str::from_utf8(valid).expect("valid up to here"), out);
                    match e.error_len() {
                        // Unfinished at the end: the next chunk may complete it.
                        None => {
                            self.pending = after.to_vec();
                            return;
                        }
                        Some(n) => {
                            after[..n].iter().for_each(|&b| hex(b, out));
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
    }

    /// Appends what is still held (an unfinished UTF-8 sequence, shown as `\xNN`) to `out`:
    /// the stream has ended.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        std::mem::take(&mut self.pending)
            .iter()
            .for_each(|&b| hex(b, out));
    }

    /// `input` as one whole stream, neutralised.
    pub fn all(utf8: bool, input: &[u8]) -> Vec<u8> {
        let mut n = Neutralizer::new(utf8);
        let mut out = Vec::with_capacity(input.len());
        n.feed(input, &mut out);
        n.finish(&mut out);
        out
    }
}

/// Whether the locale's character set is UTF-8 (`LC_ALL`, else `LC_CTYPE`, else `LANG`,
/// the first one set and not empty, names UTF-8).
pub fn locale_is_utf8() -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        })
}

fn push_str(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c as u32 {
            0x09 | 0x0a | 0x0d | 0x20..=0x7e | 0xa0.. => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
            0x80..=0x9f => {
                out.extend_from_slice(b"M-");
                caret(c as u8 - 0x80, out);
            }
            cp => caret(cp as u8, out),
        }
    }
}

/// A byte outside a UTF-8 locale.
fn push_byte(b: u8, out: &mut Vec<u8>) {
    match b {
        0x09 | 0x0a | 0x0d | 0x20..=0x7e => out.push(b),
        0x80.. => hex(b, out),
        _ => caret(b, out),
    }
}

/// `^@` … `^_` for 0x00–0x1F, `^?` for 0x7F.
fn caret(b: u8, out: &mut Vec<u8>) {
    out.push(b'^');
    out.push(if b == 0x7f { b'?' } else { b + 0x40 });
}

fn hex(b: u8, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        DIGITS[usize::from(b >> 4)],
        DIGITS[usize::from(b & 0xf)],
    ]);
}

/// A writer that neutralises what passes through it before `inner` sees it. Shutting it
/// down writes out an unfinished UTF-8 sequence it still holds (as `\xNN`), then shuts
/// `inner` down.
pub struct Neutralized<W> {
    inner: W,
    filter: Neutralizer,
    /// Filtered bytes not yet written to `inner`.
    out: Vec<u8>,
    finished: bool,
}

impl<W: AsyncWrite + Unpin> Neutralized<W> {
    /// A writer that neutralises for a terminal whose character set is UTF-8 (`utf8`) or not
    /// (see [`Neutralizer::new`]).
    pub fn new(inner: W, utf8: bool) -> Neutralized<W> {
        Neutralized {
            inner,
            filter: Neutralizer::new(utf8),
            out: Vec::new(),
            finished: false,
        }
    }

    /// Writes out what is buffered.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Neutralized<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.drain(cx))?;
        me.filter.feed(buf, &mut me.out);
        // Written out now as far as `inner` takes it; the rest on the next call or flush.
        let _ = me.drain(cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        ready!(me.drain(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if !me.finished {
            me.filter.finish(&mut me.out);
            me.finished = true;
        }
        ready!(me.drain(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utf8(input: &[u8]) -> String {
        String::from_utf8(Neutralizer::all(true, input)).expect("output is UTF-8")
    }

    #[test]
    fn controls_are_shown_and_text_passes() {
        for (input, want) in [
            (&b"plain text\n"[..], "plain text\n"),
            (b"tab\there\r\n", "tab\there\r\n"),
            (b"\x1b]0;pwned\x07\x1b[2J", "^[]0;pwned^G^[[2J"),
            (b"\x1bP1$r\x1b\\", "^[P1$r^[\\"),
            (b"\x1b[31mred\x1b[0m", "^[[31mred^[[0m"),
            (b"bs\x08 del\x7f nul\x00", "bs^H del^? nul^@"),
            (b"\x0c\x0b\x1f", "^L^K^_"),
            ("C1 CSI \u{9b}2J".as_bytes(), "C1 CSI M-^[2J"),
            ("OSC \u{9d}0;x\u{9c}".as_bytes(), "OSC M-^]0;xM-^\\"),
            ("\u{80}\u{9f}\u{a0}".as_bytes(), "M-^@M-^_\u{a0}"),
            ("é € 𝄞 日本".as_bytes(), "é € 𝄞 日本"),
            (b"raw \x9b2J", "raw \\x9b2J"),
            (b"\xff\xfe", "\\xff\\xfe"),
            (b"overlong \xc0\xaf", "overlong \\xc0\\xaf"),
            (b"surrogate \xed\xa0\x80", "surrogate \\xed\\xa0\\x80"),
            (b"cut \xe2\x82", "cut \\xe2\\x82"),
        ] {
            assert_eq!(utf8(input), want, "{input:?}");
        }
    }

    #[test]
    fn outside_a_utf8_locale_every_high_byte_is_hex() {
        let got = Neutralizer::all(false, "é \x1b[2J\u{9b}".as_bytes());
        assert_eq!(got, b"\\xc3\\xa9 ^[[2J\\xc2\\x9b");
    }

    #[test]
    fn a_sequence_split_across_writes_is_judged_whole() {
        let mut n = Neutralizer::new(true);
        let mut out = Vec::new();
        // U+009B (C2 9B) and "€" (E2 82 AC) cut in the middle.
        for piece in [&b"a\xc2"[..], b"\x9b", b"b\xe2\x82", b"\xac", b"\xe2"] {
            n.feed(piece, &mut out);
        }
        n.finish(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "aM-^[b€\\xe2");
    }

    #[tokio::test]
    async fn the_writer_filters_and_shutdown_flushes_the_unfinished_tail() {
        use tokio::io::AsyncWriteExt;
        let mut w = Neutralized::new(Vec::new(), true);
        w.write_all(b"\x1b]0;t\x07ok \xe2\x82").await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.inner, b"^[]0;t^Gok ", "the unfinished tail is held");
        w.write_all(b"\xac").await.unwrap();
        w.write_all(b"\xe2").await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(String::from_utf8(w.inner).unwrap(), "^[]0;t^Gok €\\xe2");
    }

    /// Every place the output may hold a raw byte 0x80–0x9F: inside a well-formed
    /// multi-byte sequence only, never as a C1 code point.
    fn no_controls(out: &[u8]) -> Result<(), TestCaseError> {
        let s = std::str::from_utf8(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for c in s.chars() {
            let cp = c as u32;
            let allowed =
                matches!(c, '\t' | '\n' | '\r') || (cp >= 0x20 && !(0x7f..=0x9f).contains(&cp));
            prop_assert!(allowed, "control U+{cp:04X} in {s:?}");
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn output_never_holds_a_control(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            no_controls(&Neutralizer::all(true, &input))?;
            let ascii = Neutralizer::all(false, &input);
            prop_assert!(ascii.iter().all(|&b| matches!(b, b'\t' | b'\n' | b'\r' | 0x20..=0x7e)));
        }

        #[test]
        fn printable_text_passes_unchanged(s in "[^\\p{Cc}]{0,200}") {
            prop_assert_eq!(utf8(s.as_bytes()), s.clone());
            let mixed = format!("{s}\n\t{s}\r\n");
            prop_assert_eq!(utf8(mixed.as_bytes()), mixed);
        }

        #[test]
        fn chunking_does_not_change_the_output(
            input in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            utf8 in any::<bool>(),
        ) {
            let whole = Neutralizer::all(utf8, &input);
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            at.sort_unstable();
            let mut n = Neutralizer::new(utf8);
            let mut out = Vec::new();
            let mut from = 0;
            for &to in at.iter().chain([input.len()].iter()) {
                n.feed(&input[from..to], &mut out);
                from = to;
            }
            n.finish(&mut out);
            prop_assert_eq!(out, whole);
        }
    }
}
