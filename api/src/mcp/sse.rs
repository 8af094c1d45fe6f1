//! An incremental reader of `text/event-stream` bodies, for clients of `/api/v1/events`: the
//! gateway's subscriptions and the CLI's `mission watch`.

/// One dispatched message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    /// The `id:` field (the event's global position).
    pub id: Option<String>,
    /// The `event:` field (the event's type).
    pub event: Option<String>,
    /// The `data:` lines, joined with newlines.
    pub data: Option<String>,
}

/// Fields `id`, `event` and `data` are kept; comments and other fields are ignored; a blank
/// line dispatches.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseMessage,
}

impl SseParser {
    /// Feed bytes; returns the messages completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.buffer.extend_from_slice(bytes);
        let mut done = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if line.is_empty() {
                let message = std::mem::take(&mut self.current);
                if message != SseMessage::default() {
                    done.push(message);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                "data" => match &mut self.current.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.current.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_are_parsed_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser
            .push(b": keep-alive\n\nid: 4\nevent: step_")
            .is_empty());
        let messages = parser.push(b"started\r\ndata: {\"a\":\ndata: 1}\n\nid: 5\n");
        assert_eq!(
            messages,
            [SseMessage {
                id: Some("4".into()),
                event: Some("step_started".into()),
                data: Some("{\"a\":\n1}".into()),
            }]
        );
        let messages = parser.push(b"data:x\n\n");
        assert_eq!(messages[0].id.as_deref(), Some("5"));
        assert_eq!(messages[0].data.as_deref(), Some("x"));
    }
}
