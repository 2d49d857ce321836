//! Builds stockade's sandbox init (`init/main.rs`) into `$OUT_DIR/stockade-init`, where
//! the library's `init` module embeds it.
//!
//! The init runs inside sandboxes whose images may hold no C library at all, so it must be
//! a static executable: it is compiled with `$RUSTC` for `$TARGET` with
//! `-C target-feature=+crt-static` (for glibc targets this needs the static C library,
//! `libc.a`, which Debian's `libc6-dev` installs), optimised for size, with `panic=abort`
//! and stripped. When it cannot be linked statically the build fails saying so; it never
//! falls back to a dynamically linked init.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "init/main.rs";
const OUTPUT: &str = "stockade-init";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=init/exec.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let output = out_dir.join(OUTPUT);

    let mut cmd = Command::new(&rustc);
    cmd.args(["--edition", "2021", "--crate-name", "stockade_init"])
        .args(["--crate-type", "bin", "--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "lto", "-C", "codegen-units=1"])
        .args(["-C", "target-feature=+crt-static"]);
    // A linker configured for the target (cross builds) is the one to use here too.
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    println!("cargo:rerun-if-env-changed={linker_var}");
    if let Some(linker) = std::env::var_os(&linker_var) {
        let mut arg = OsString::from("linker=");
        arg.push(linker);
        cmd.arg("-C").arg(arg);
    }
    cmd.arg("-o").arg(&output).arg(manifest_dir.join(SOURCE));

    let result = match cmd.output() {
        Ok(r) => r,
        Err(e) => fail(
            &format!("cannot run {}: {e}", Path::new(&rustc).display()),
            "",
        ),
    };
    let diagnostics = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() && diagnostics.contains("error: linking with") {
        fail(
            &format!(
                "{SOURCE} cannot be linked statically for {target}; stockade's sandbox init \
                 must be a static executable (for a glibc target install the static C \
                 library, libc.a, from libc6-dev or its equivalent)"
            ),
            &diagnostics,
        );
    }
    if !result.status.success() {
        fail(
            &format!("{SOURCE} does not compile for {target}"),
            &diagnostics,
        );
    }
    for line in diagnostics.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={SOURCE}: {line}");
    }
    match std::fs::read(&output).map(|elf| has_interpreter(&elf)) {
        Ok(Some(false)) => {}
        Ok(Some(true)) => fail(
            &format!("{SOURCE} was linked dynamically for {target} despite +crt-static"),
            "",
        ),
        Ok(None) => fail(
            &format!("{} is not an ELF executable", output.display()),
            "",
        ),
        Err(e) => fail(&format!("cannot read {}: {e}", output.display()), ""),
    }
}

/// Stops the build with one line saying why, and the compiler's own output below it.
fn fail(why: &str, detail: &str) -> ! {
    eprintln!("error: {why}");
    if !detail.is_empty() {
        eprintln!("{detail}");
    }
    std::process::exit(1);
}

/// Whether the ELF file names a program interpreter (a `PT_INTERP` program header, which
/// every dynamically linked executable has and a static one lacks); `None` when it is not
/// an ELF file this can read.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4)? != b"\x7fELF" {
        return None;
    }
    let little = match elf.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let int = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at.checked_add(len)?)?;
        let mut v = 0u64;
        for i in 0..len {
            let b = if little { bytes[len - 1 - i] } else { bytes[i] };
            v = (v << 8) | u64::from(b);
        }
        Some(v)
    };
    // (offset of e_phoff, its size, offset of e_phentsize) for ELF32 and ELF64.
    let (phoff_at, phoff_len, phentsize_at) = match elf.get(4)? {
        1 => (0x1c, 4, 0x2a),
        2 => (0x20, 8, 0x36),
        _ => return None,
    };
    let phoff = usize::try_from(int(phoff_at, phoff_len)?).ok()?;
    let entsize = usize::try_from(int(phentsize_at, 2)?).ok()?;
    let count = usize::try_from(int(phentsize_at + 2, 2)?).ok()?;
    for i in 0..count {
        let at = phoff.checked_add(i.checked_mul(entsize)?)?;
        if int(at, 4)? == u64::from(PT_INTERP) {
            return Some(true);
        }
    }
    Some(false)
}
