//! Sizes in Docker's syntax with a required unit (`512m`, `4g`), parsed
//! once where they enter the model (the spec's `memory`, `code_storage`,
//! `[inference.sizes]` and a GPU's `vram`), and written back the same way
//! wherever they land (`--memory=`, `--tmpfs ...,size=`, explain, inspect).

use std::fmt;

use serde::{Serialize, Serializer};

/// A binary unit: Docker's `k`, `m` and `g` are KiB, MiB and GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    K,
    M,
    G,
}

impl Unit {
    const fn shift(self) -> u32 {
        match self {
            Unit::K => 10,
            Unit::M => 20,
            Unit::G => 30,
        }
    }

    const fn letter(self) -> char {
        match self {
            Unit::K => 'k',
            Unit::M => 'm',
            Unit::G => 'g',
        }
    }
}

/// A number of KiB, MiB or GiB. Written back exactly as the spec wrote it:
/// [`Size::parse`] takes no leading zero, so the text round-trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    count: u32,
    unit: Unit,
}

impl Size {
    /// Longest count the spec may write: 7 digits (9,999,999g is far past
    /// any machine, and the bytes fit a u64).
    const MAX_DIGITS: usize = 7;

    pub const fn kib(count: u32) -> Size {
        Size { count, unit: Unit::K }
    }

    pub const fn mib(count: u32) -> Size {
        Size { count, unit: Unit::M }
    }

    pub const fn gib(count: u32) -> Size {
        Size { count, unit: Unit::G }
    }

    /// `512m`, `4g`, `1024k`: a count from 1 without a leading zero and a
    /// unit; `None` for anything else (`4`, `0g`, `4gb`, `g`).
    pub fn parse(text: &str) -> Option<Size> {
        let unit = match text.chars().last()? {
            'k' => Unit::K,
            'm' => Unit::M,
            'g' => Unit::G,
            _ => return None,
        };
        let digits = &text[..text.len() - 1];
        let plain = !digits.is_empty()
            && digits.len() <= Size::MAX_DIGITS
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        plain.then(|| Size {
            count: digits.parse().expect("at most 7 ASCII digits"),
            unit,
        })
    }

    pub const fn bytes(self) -> u64 {
        (self.count as u64) << self.unit.shift()
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit.letter())
    }
}

/// As the spec writes it (`"512m"`), so the JSON of `inspect` and
/// `explain` reads as before sizes were typed.
impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_once_and_write_back_as_written() {
        for text in ["512m", "4g", "1024k", "9999999g"] {
            assert_eq!(Size::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Size::parse("512m").unwrap().bytes(), 512 << 20);
        assert_eq!(Size::parse("24g").unwrap().bytes(), 24 << 30);
        assert_eq!(Size::parse("4g"), Some(Size::gib(4)));
        for bad in ["4", "0g", "04g", "4gb", "g", "", "-1g", "10000000g", "4G", "é"] {
            assert_eq!(Size::parse(bad), None, "{bad}");
        }
        assert_eq!(serde_json::to_string(&Size::mib(64)).unwrap(), "\"64m\"");
    }
}
