//! Counting the commands in a client's byte stream, for [`FaultProxy`]
//! (crate::FaultProxy): what a client really sent, including commands
//! that scripts and pipelines would hide from the server's own counters
//! (`INFO commandstats` also counts the commands a Lua script runs).

/// A RESP request parser that only counts: a command is an array of bulk
/// strings (`*<n>\r\n` then `n` times `$<len>\r\n<bytes>\r\n`), or an
/// inline command (a line of text). Bytes may arrive split anywhere.
#[derive(Debug, Default)]
pub(crate) struct CommandCounter {
    state: State,
    /// Digits of the number being read.
    number: u64,
    /// Elements of the current array still to read.
    elements: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands.
    #[default]
    Start,
    /// In `*<n>` (after the `*`), up to the `\n`.
    ArrayLength,
    /// Expecting an element's `$`.
    Element,
    /// In `$<len>`, up to the `\n`.
    BulkLength,
    /// In a bulk string's bytes and its `\r\n`: this many left.
    Bulk(u64),
    /// In an inline command, up to the `\n`.
    Inline,
}

impl CommandCounter {
    /// Reads `bytes`; answers how many commands began in them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> u64 {
        let mut commands = 0;
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            match self.state {
                State::Start => match byte {
                    b'*' => {
                        commands += 1;
                        self.number = 0;
                        self.state = State::ArrayLength;
                    }
                    b'\r' | b'\n' => {}
                    _ => {
                        commands += 1;
                        self.state = State::Inline;
                    }
                },
                State::ArrayLength | State::BulkLength => match byte {
                    b'0'..=b'9' => self.number = self.number * 10 + u64::from(byte - b'0'),
                    b'\n' => {
                        if self.state == State::ArrayLength {
                            self.elements = self.number;
                            self.state = if self.elements == 0 {
                                State::Start
                            } else {
                                State::Element
                            };
                        } else {
                            self.state = State::Bulk(self.number + 2);
                        }
                    }
                    _ => {} // `\r`, or a `-1` nobody sends in a request
                },
                State::Element => {
                    if byte == b'$' {
                        self.number = 0;
                        self.state = State::BulkLength;
                    }
                }
                State::Bulk(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    let left = left - take;
                    if left > 0 {
                        self.state = State::Bulk(left);
                    } else {
                        self.elements -= 1;
                        self.state = if self.elements == 0 {
                            State::Start
                        } else {
                            State::Element
                        };
                    }
                    continue;
                }
                State::Inline => {
                    if byte == b'\n' {
                        self.state = State::Start;
                    }
                }
            }
            i += 1;
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &[u8] =
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\n*2\r\n$\r\nPING\r\n";

    #[test]
    fn counts_commands_however_the_bytes_are_split() {
        // The second command's value looks like a command header: it is
        // skipped by length, not parsed.
        let mut whole = CommandCounter::default();
        assert_eq!(whole.feed(PIPELINE), 3);
        for split in 1..PIPELINE.len() {
            let mut parts = CommandCounter::default();
            let (a, b) = PIPELINE.split_at(split);
            assert_eq!(parts.feed(a) + parts.feed(b), 3, "split at {split}");
        }
        let mut bytes = CommandCounter::default();
        let one_by_one: u64 = PIPELINE.iter().map(|b| bytes.feed(&[*b])).sum();
        assert_eq!(one_by_one, 3);
    }
}
