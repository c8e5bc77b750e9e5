//! Where each field of a manifest sits in its text, for errors that point at the right line.
//!
//! serde gives values without positions, so the text is also walked with a YAML event parser
//! (yaml-rust2) that reports a mark for every node: the result maps field paths as bottle's
//! errors name them (`egress.routes[1].auth.scheme`) to their line and column. Comments, and a
//! value repeated elsewhere in the file, cannot mislead it the way a text search could.

use std::collections::BTreeMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Field paths to 1-based `(line, column)`: a map entry's key, or a list item's node.
#[derive(Debug, Default)]
pub struct Spans(BTreeMap<String, (usize, usize)>);

impl Spans {
    /// The spans of `text`; empty when the text is not YAML (serde reports that error).
    pub fn of(text: &str) -> Spans {
        let mut walker = Walker::default();
        // A parse error leaves what was walked so far: still right for the part before it.
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        Spans(walker.spans)
    }

    /// Where `field` is, or the nearest enclosing field that is there (a missing key is
    /// reported at its parent).
    pub fn find(&self, field: &str) -> Option<(usize, usize)> {
        let mut path = field;
        loop {
            if let Some(pos) = self.0.get(path) {
                return Some(*pos);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// Where the walk is: inside a map (with the key whose value comes next) or a list.
#[derive(Debug)]
enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Debug, Default)]
struct Walker {
    stack: Vec<Frame>,
    spans: BTreeMap<String, (usize, usize)>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Walker {
    /// The path of the value node that comes next, consuming its key or list slot.
    fn next_path(&mut self) -> String {
        match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key }) => {
                let k = key.take().unwrap_or_default();
                join(path, &k)
            }
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                format!("{path}[{}]", *next - 1)
            }
        }
    }

    fn mark(&mut self, path: String, m: Marker) {
        self.spans.entry(path).or_insert((m.line(), m.col() + 1));
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, m: Marker) {
        // A scalar where a map expects a key is that key.
        if let (
            Event::Scalar(k, ..),
            Some(Frame::Map {
                path,
                key: key @ None,
            }),
        ) = (&ev, self.stack.last_mut())
        {
            let full = join(path, k);
            *key = Some(k.clone());
            self.mark(full, m);
            return;
        }
        match ev {
            Event::Scalar(..) | Event::Alias(_) => {
                let path = self.next_path();
                self.mark(path, m);
            }
            Event::MappingStart(..) => {
                let path = self.next_path();
                self.mark(path.clone(), m);
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_path();
                self.mark(path.clone(), m);
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# egress: {routes: []}   a comment that mentions fields
image: img
egress:
  allowlist: [pypi.org, bad host]
  routes:
    - host: api.github.com
    - host: api.github.com   # the same value again
      auth:
        scheme: Basic
plugins:
  hello: {grants: [privileged]}
";

    #[test]
    fn fields_map_to_their_own_line_not_a_comment_or_an_earlier_equal_value() {
        let s = Spans::of(TEXT);
        assert_eq!(s.find("image"), Some((2, 1)));
        assert_eq!(s.find("egress.routes[1].host"), Some((7, 7)));
        assert_eq!(s.find("egress.routes[1].auth.scheme"), Some((9, 9)));
        assert_eq!(s.find("egress.allowlist[1]"), Some((4, 25)));
        assert_eq!(s.find("plugins.hello.grants"), Some((11, 11)));
    }

    #[test]
    fn a_missing_field_is_found_at_its_parent() {
        let s = Spans::of(TEXT);
        assert_eq!(s.find("egress.routes[1].auth.token_ref"), Some((8, 7)));
        assert_eq!(s.find("nothing.here"), None);
    }
}
