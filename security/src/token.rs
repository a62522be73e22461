//! Bearer tokens: read from a file, compared in constant time, never printed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Longest token accepted: far above any generated secret, far below a header
/// size that could trouble HTTP/2.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// A secret. `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// A token from its text: 16 to [`MAX_TOKEN_BYTES`] visible ASCII
    /// characters (a header value; short secrets are guessable). The error
    /// never contains the text.
    pub fn new(text: &str) -> Result<Token, String> {
        if text.len() < 16 {
            return Err(format!("a token must be at least 16 characters long (this one has {})", text.len()));
        }
        if text.len() > MAX_TOKEN_BYTES {
            return Err(format!("a token must be at most {MAX_TOKEN_BYTES} characters long"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "a token must be visible ASCII characters only (no spaces or control characters)".into()
            );
        }
        Ok(Token(text.into()))
    }

    /// Reads a token file: its content with surrounding whitespace (a final
    /// newline) removed. The error names `setting` and the file, not the
    /// content.
    pub fn from_file(setting: &str, path: &Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--{setting} {}: cannot read it: {e}", path.display()))?;
        Token::new(text.trim()).map_err(|e| format!("--{setting} {}: {e}", path.display()))
    }

    /// The secret itself, for the `authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they
    /// differ (a remote caller must not learn a prefix by timing).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != presented.len() {
            return false;
        }
        mine.iter().zip(presented).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
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
        let mut file = tempfile_in_target();
        writeln!(file.1, "abcdefghijklmnopqrstuvwxyz").expect("write");
        let token = Token::from_file("kv-token-file", &file.0).expect("valid file");
        assert!(token.matches(b"abcdefghijklmnopqrstuvwxyz"));
        let err = Token::from_file("kv-token-file", Path::new("/nonexistent/token")).expect_err("missing");
        assert!(err.starts_with("--kv-token-file /nonexistent/token"), "{err}");
        std::fs::remove_file(&file.0).expect("clean up");
    }

    /// A file of our own beside the test binary (no tempfile dependency here).
    fn tempfile_in_target() -> (std::path::PathBuf, std::fs::File) {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("ringkv-token-test-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("create");
        (path, file)
    }
}
