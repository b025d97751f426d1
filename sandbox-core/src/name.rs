//! VM names. A name becomes a directory under the state dir, a socket path
//! and an argument of the VMM's comma-separated options, so the alphabet is
//! small on purpose: `..`, `/`, `:` and `,` can never reach any of them.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use crate::error::Error;

pub const MAX_NAME_LEN: usize = 64;

/// A validated VM name: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VmName(String);

impl VmName {
    pub fn parse(raw: &OsStr) -> Result<VmName, Error> {
        let bytes = raw.as_bytes();
        let shown = raw.to_string_lossy();
        let refuse = |why: &str| Err(Error::Usage(format!("invalid VM name {shown:?}: {why}")));
        if bytes.is_empty() {
            return refuse("empty");
        }
        if bytes.len() > MAX_NAME_LEN {
            return refuse("longer than 64 bytes");
        }
        if bytes[0] == b'.' {
            return refuse("starts with '.'");
        }
        if let Some(&bad) = bytes
            .iter()
            .find(|&&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        {
            return refuse(&format!(
                "byte {:?} is not one of [A-Za-z0-9_.-]",
                char::from(bad)
            ));
        }
        // Every byte is ASCII, so this is valid UTF-8.
        Ok(VmName(shown.into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmName({:?})", self.0)
    }
}

impl AsRef<std::path::Path> for VmName {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn parse(b: &[u8]) -> Result<VmName, Error> {
        VmName::parse(&OsString::from_vec(b.to_vec()))
    }

    #[test]
    fn accepts_the_alphabet() {
        for ok in [&b"a"[..], b"vm-1", b"Work_VM.2", b"a..b", b"0", &[b'x'; 64]] {
            assert_eq!(parse(ok).unwrap().as_str().as_bytes(), ok);
        }
    }

    #[test]
    fn refuses_everything_else_with_a_usage_error() {
        let long = [b'x'; 65];
        for bad in [
            &b""[..],
            b".",
            b"..",
            b".hidden",
            b"a/b",
            b"/",
            b"a:b",
            b"a,b",
            b"a\0b",
            b"a b",
            b"\xff\xfe",
            "vé".as_bytes(),
            &long,
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 100, "{bad:?}");
            let line = err.to_string();
            assert!(line.starts_with("invalid VM name"), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }
}
