//! Bearer tokens: read from a file, compared in constant time, never printed.
//!
//! A token file holds one secret per line. The first is the one this process
//! presents when it calls others; every line is accepted from callers. Two
//! lines are how a secret is rotated without refusing anyone (see the
//! Security section of docs/operations.md).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Longest token accepted: far above any generated secret, far below a header
/// size that could trouble HTTP/2.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Most secrets in one token file: a rotation needs two.
pub const MAX_TOKENS_PER_FILE: usize = 4;

/// One or more secrets of one role: the first is presented, any is accepted.
/// `Debug` and `Display` print `<redacted>`.
/// Not `PartialEq`: secrets are compared only by [`Token::matches`].
#[derive(Clone)]
pub struct Token(Arc<[Box<str>]>);

impl Token {
    /// A token from its text: 16 to [`MAX_TOKEN_BYTES`] visible ASCII
    /// characters (a header value; short secrets are guessable). The error
    /// never contains the text.
    pub fn new(text: &str) -> Result<Token, String> {
        Ok(Token(Arc::from([checked(text)?])))
    }

    /// Reads a token file: one secret per line, surrounding whitespace and
    /// empty lines ignored, at most [`MAX_TOKENS_PER_FILE`]. The error names
    /// `setting`, the file and the line, not the content.
    pub fn from_file(setting: &str, path: &Path) -> Result<Token, String> {
        let name = || format!("--{setting} {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read it: {e}", name()))?;
        let mut secrets = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() {
                secrets.push(checked(line).map_err(|e| format!("{}, line {}: {e}", name(), number + 1))?);
            }
        }
        match secrets.len() {
            0 => Err(format!("{}: holds no token", name())),
            n if n > MAX_TOKENS_PER_FILE => {
                Err(format!("{}: holds {n} tokens, at most {MAX_TOKENS_PER_FILE} are allowed", name()))
            }
            _ => Ok(Token(secrets.into())),
        }
    }

    /// The secret presented to others (the file's first), for the
    /// `authorization` header.
    pub fn expose(&self) -> &str {
        &self.0[0]
    }

    /// Whether `presented` is one of these secrets, in time independent of
    /// where they differ (a remote caller must not learn a prefix by timing).
    pub fn matches(&self, presented: &[u8]) -> bool {
        // Every secret is compared: the time does not tell which one matched.
        self.0.iter().fold(false, |found, secret| found | same_bytes(secret.as_bytes(), presented))
    }

    /// Whether a secret of this token is also one of `other`'s (two roles
    /// must never share one: the weaker would open the stronger's calls).
    pub fn shares_a_secret_with(&self, other: &Token) -> bool {
        self.0.iter().any(|secret| other.matches(secret.as_bytes()))
    }
}

/// `text` if it is a valid secret.
fn checked(text: &str) -> Result<Box<str>, String> {
    if text.len() < 16 {
        return Err(format!("a token must be at least 16 characters long (this one has {})", text.len()));
    }
    if text.len() > MAX_TOKEN_BYTES {
        return Err(format!("a token must be at most {MAX_TOKEN_BYTES} characters long"));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token must be visible ASCII characters only (no spaces or control characters)".into());
    }
    Ok(text.into())
}

/// Equality in time that depends on the lengths only.
fn same_bytes(mine: &[u8], presented: &[u8]) -> bool {
    if mine.len() != presented.len() {
        return false;
    }
    mine.iter().zip(presented).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn tokens_never_print_and_compare_exactly() {
        let token = Token::new("s3cret-s3cret-s3cret").expect("valid");
        assert_eq!(format!("{token:?} {token}"), "Token(<redacted>) <redacted>");
        assert!(token.matches(b"s3cret-s3cret-s3cret"));
        assert!(!token.matches(b"s3cret-s3cret-s3creT"));
        assert!(!token.matches(b"s3cret-s3cret-s3cret "));
        assert!(!token.matches(b""));
    }

    #[test]
    fn bad_tokens_are_refused_without_showing_them() {
        for bad in
            ["short", "has a space in the middle", "tab\tinside-the-token!", &"x".repeat(MAX_TOKEN_BYTES + 1)]
        {
            let err = Token::new(bad).expect_err(bad);
            assert!(!err.contains(bad), "{err}");
        }
    }

    #[test]
    fn a_token_file_loses_its_final_newline_and_errors_name_the_setting() {
        let mut file = tempfile_in_target("one");
        writeln!(file.1, "abcdefghijklmnopqrstuvwxyz").expect("write");
        let token = Token::from_file("kv-token-file", &file.0).expect("valid file");
        assert!(token.matches(b"abcdefghijklmnopqrstuvwxyz"));
        let err = Token::from_file("kv-token-file", Path::new("/nonexistent/token")).expect_err("missing");
        assert!(err.starts_with("--kv-token-file /nonexistent/token"), "{err}");
        std::fs::remove_file(&file.0).expect("clean up");
    }

    #[test]
    fn a_file_of_two_tokens_presents_the_first_and_accepts_both() {
        let mut file = tempfile_in_target("two");
        writeln!(file.1, "first-secret-first-secret\n\n  second-secret-second-secret  ").expect("write");
        let token = Token::from_file("admin-token-file", &file.0).expect("valid file");
        assert_eq!(token.expose(), "first-secret-first-secret");
        assert!(token.matches(b"first-secret-first-secret"));
        assert!(token.matches(b"second-secret-second-secret"));
        assert!(!token.matches(b"third-secret-third-secret"));
        assert!(token.shares_a_secret_with(&Token::new("second-secret-second-secret").expect("valid")));
        assert!(!token.shares_a_secret_with(&Token::new("third-secret-third-secret").expect("valid")));

        for (text, expected) in [
            ("first-secret-first-secret\nshort\n", "line 2: a token must be at least 16"),
            ("\n  \n", "holds no token"),
            (&"abcdefghijklmnopqrstuvwxyz\n".repeat(MAX_TOKENS_PER_FILE + 1), "at most 4"),
        ] {
            std::fs::write(&file.0, text).expect("write");
            let err = Token::from_file("admin-token-file", &file.0).expect_err(text);
            assert!(err.starts_with("--admin-token-file ") && err.contains(expected), "{err}");
            assert!(!err.contains("first-secret"), "{err}");
        }
        std::fs::remove_file(&file.0).expect("clean up");
    }

    /// A file of our own for one test (no tempfile dependency here).
    fn tempfile_in_target(test: &str) -> (std::path::PathBuf, std::fs::File) {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("ringkv-token-test-{}-{test}", std::process::id()));
        let file = std::fs::File::create(&path).expect("create");
        (path, file)
    }
}
