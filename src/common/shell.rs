//! A word for a POSIX shell: what the operator's commands hand to a shell
//! they do not run themselves (a printed `gcloud` step, the remote side of
//! `ssh`).

/// `word` as it is when it holds nothing the shell reads, else in single
/// quotes (an empty word too, so that it stays a word).
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_and_the_rest_is_single_quoted() {
        assert_eq!(shell_word("gs://bucket/a.raw.tar.gz"), "gs://bucket/a.raw.tar.gz");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's $(x)"), r"'it'\''s $(x)'");
    }
}
