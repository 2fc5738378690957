//! Splits one script or interactive line into words the way a POSIX shell would for the
//! simple cases DS CLI scripts use: blanks separate words, `'...'` and `"..."` quote, a
//! backslash escapes the next character (not inside single quotes). A line whose first
//! non-blank character is `#` is a comment.

/// Why a line could not be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    UnterminatedQuote,
}

/// The words of `line`; empty for blank and comment lines.
pub fn split(line: &str) -> Result<Vec<String>, TokenError> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') {
        return Ok(Vec::new());
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    // A word exists once any character or quote pair was seen (so `''` is an empty word).
    let mut in_word = false;
    let mut chars = trimmed.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(TokenError::UnterminatedQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(TokenError::UnterminatedQuote),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(TokenError::UnterminatedQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn words_and_blanks() {
        assert_eq!(s("  lsfbvol   -l  1000-100F "), ["lsfbvol", "-l", "1000-100F"]);
        assert!(s("").is_empty());
        assert!(s("   \t ").is_empty());
    }

    #[test]
    fn comments() {
        assert!(s("# mkfbvol 1000").is_empty());
        assert!(s("   # indented").is_empty());
        // Only a leading `#` starts a comment.
        assert_eq!(s("mkfbvol -name a#h 1000"), ["mkfbvol", "-name", "a#h", "1000"]);
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(s("lsfbvol -fmt delim -delim '|'"), ["lsfbvol", "-fmt", "delim", "-delim", "|"]);
        assert_eq!(s(r#"mkfbvol -name "my vol" 1000"#), ["mkfbvol", "-name", "my vol", "1000"]);
        assert_eq!(s(r#"a "x\"y" 'p\q' r\ s"#), ["a", "x\"y", "p\\q", "r s"]);
        assert_eq!(s("a '' b"), ["a", "", "b"]);
        assert_eq!(s("a'b'c"), ["abc"]);
    }

    #[test]
    fn unterminated() {
        assert_eq!(split("a 'b"), Err(TokenError::UnterminatedQuote));
        assert_eq!(split("a \"b"), Err(TokenError::UnterminatedQuote));
    }
}
