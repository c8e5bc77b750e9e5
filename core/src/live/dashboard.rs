//! `bottle dashboard`: every bottle's supervise requests, live, in a terminal UI (ratatui).
//!
//! [`Dashboard`] is the screen's state: it turns keys into [`Action`]s and draws itself, with
//! no I/O, so a test renders it on ratatui's `TestBackend`. [`run`] is the loop around it:
//! the terminal, the queue watch, and the approvals the actions ask for.

use crate::hostenv::HostEnv;
use crate::live::requests::{self, ApproveOptions, Asked, QueueWatch};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState, Wrap};
use std::path::Path;
use std::time::Duration;

/// What a key asks the loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond redrawing.
    Nothing,
    /// Leave the dashboard.
    Quit,
    /// Work out what approving request `id` would grant (only `path_prefix` on its host,
    /// when given), and show it for a `y` ([`Dashboard::confirm`]).
    Review {
        /// The request.
        id: String,
        /// The path prefix the human set with `e`.
        path_prefix: Option<String>,
        /// How long the grant lasts, as chosen with `d` (none: until the bottle stops).
        for_duration: Option<Duration>,
    },
    /// The human said `y` to what [`Dashboard::confirm`] showed: grant request `id`.
    Grant {
        /// The request.
        id: String,
    },
    /// Reject request `id` with `note`.
    Reject {
        /// The request.
        id: String,
        /// What the agent is told.
        note: String,
    },
}

/// What the bottom line is typing into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prompt {
    /// A reject's note.
    Note,
    /// The path prefix to approve.
    PathPrefix,
}

/// The screen's state.
#[derive(Debug, Default)]
pub struct Dashboard {
    items: Vec<Asked>,
    selected: usize,
    prompt: Option<(Prompt, String)>,
    message: Option<(String, bool)>,
    /// A grant shown and waiting for `y`: the request (`slug/id`) and what it grants.
    confirming: Option<(String, String)>,
    /// Which of [`GRANT_FOR`] the next approval lasts (`d` steps through them).
    grant_for: usize,
}

/// The durations `d` steps through: until the bottle stops, then for a while.
pub const GRANT_FOR: [Option<Duration>; 4] = [
    None,
    Some(Duration::from_secs(10 * 60)),
    Some(Duration::from_secs(60 * 60)),
    Some(Duration::from_secs(8 * 60 * 60)),
];

/// A duration of [`GRANT_FOR`] in words.
fn for_words(d: Option<Duration>) -> String {
    d.map_or_else(
        || "for the run".to_owned(),
        |d| format!("for {}", humantime::format_duration(d)),
    )
}

/// Open requests first (oldest first), then answered ones (newest first).
fn order(items: &mut [Asked]) {
    items.sort_by(|a, b| {
        let open = |x: &Asked| !matches!(x.status(), "pending" | "failed");
        open(a).cmp(&open(b)).then_with(|| {
            if open(a) {
                b.request.created.cmp(&a.request.created)
            } else {
                a.request.created.cmp(&b.request.created)
            }
        })
    });
}

impl Dashboard {
    /// A dashboard over `items`.
    pub fn new(items: Vec<Asked>) -> Dashboard {
        let mut d = Dashboard::default();
        d.set_items(items);
        d
    }

    /// New contents (after the queue changed); the selection stays on the same request, of the
    /// same bottle (another bottle's request may carry the same id).
    pub fn set_items(&mut self, mut items: Vec<Asked>) {
        order(&mut items);
        let key = self
            .current()
            .map(|a| (a.slug.clone(), a.request.id.clone()));
        self.items = items;
        self.selected = key
            .and_then(|(slug, id)| {
                self.items
                    .iter()
                    .position(|a| a.slug == slug && a.request.id == id)
            })
            .unwrap_or(0)
            .min(self.items.len().saturating_sub(1));
    }

    /// New contents after the human answered one: the selection moves to the first request
    /// still open, so the next one is a key away.
    pub fn answered(&mut self, items: Vec<Asked>) {
        self.set_items(items);
        if let Some(i) = self
            .items
            .iter()
            .position(|a| matches!(a.status(), "pending" | "failed"))
        {
            self.selected = i;
        }
    }

    /// Show what granting request `id` (`slug/id`) does (`text`, several lines) and wait for
    /// `y`; any other key cancels.
    pub fn confirm(&mut self, id: String, text: String) {
        self.confirming = Some((id, text));
        self.message = None;
    }

    /// Show `text` on the bottom line (in red when `error`).
    pub fn report(&mut self, text: impl Into<String>, error: bool) {
        self.message = Some((text.into(), error));
    }

    /// The request `slug/id` as the screen shows it.
    pub fn shown(&self, slug_id: &str) -> Option<bottle_contract::supervise::Request> {
        self.items
            .iter()
            .find(|a| format!("{}/{}", a.slug, a.request.id) == slug_id)
            .map(|a| a.request.clone())
    }

    fn current(&self) -> Option<&Asked> {
        self.items.get(self.selected)
    }

    fn open(&self) -> Option<&Asked> {
        self.current()
            .filter(|a| matches!(a.status(), "pending" | "failed"))
    }

    /// Handle one key.
    pub fn key(&mut self, code: KeyCode) -> Action {
        if let Some((id, _)) = self.confirming.take() {
            if matches!(code, KeyCode::Char('y' | 'Y')) {
                return Action::Grant { id };
            }
            self.report(format!("not granted: {id} stays open"), false);
            return Action::Nothing;
        }
        if let Some((prompt, mut text)) = self.prompt.take() {
            match code {
                KeyCode::Esc => self.message = None,
                KeyCode::Enter => {
                    let Some(id) = self.open().map(|a| format!("{}/{}", a.slug, a.request.id))
                    else {
                        return Action::Nothing;
                    };
                    return match prompt {
                        Prompt::Note => Action::Reject { id, note: text },
                        Prompt::PathPrefix => Action::Review {
                            id,
                            path_prefix: Some(text),
                            for_duration: GRANT_FOR[self.grant_for],
                        },
                    };
                }
                KeyCode::Backspace => {
                    text.pop();
                    self.prompt = Some((prompt, text));
                }
                KeyCode::Char(c) if !c.is_control() && text.chars().count() < 200 => {
                    text.push(c);
                    self.prompt = Some((prompt, text));
                }
                _ => self.prompt = Some((prompt, text)),
            }
            return Action::Nothing;
        }
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(self.items.len().saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Char('a') => {
                if let Some(a) = self.open() {
                    return Action::Review {
                        id: format!("{}/{}", a.slug, a.request.id),
                        path_prefix: None,
                        for_duration: GRANT_FOR[self.grant_for],
                    };
                }
                self.report("nothing open is selected", true);
            }
            KeyCode::Char('r') => {
                if self.open().is_some() {
                    self.prompt = Some((Prompt::Note, String::new()));
                } else {
                    self.report("nothing open is selected", true);
                }
            }
            KeyCode::Char('d') => {
                self.grant_for = (self.grant_for + 1) % GRANT_FOR.len();
                self.report(
                    format!(
                        "approvals now last {}",
                        for_words(GRANT_FOR[self.grant_for])
                    ),
                    false,
                );
            }
            KeyCode::Char('e') => match self.open() {
                Some(a) => {
                    let start = a.request.path_prefix.clone().unwrap_or_else(|| "/".into());
                    self.prompt = Some((Prompt::PathPrefix, start));
                }
                None => self.report("nothing open is selected", true),
            },
            _ => {}
        }
        Action::Nothing
    }

    /// Draw the screen.
    pub fn render(&self, frame: &mut Frame) {
        // Asked to confirm, the description gets the room: every line of what is granted
        // shows, down to the agent's own words at the end.
        let (list_height, detail_height) = if self.confirming.is_some() {
            (Constraint::Length(4), Constraint::Min(12))
        } else {
            (Constraint::Min(4), Constraint::Length(8))
        };
        let [title, list, detail, bottom] = Layout::vertical([
            Constraint::Length(1),
            list_height,
            detail_height,
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let open = self
            .items
            .iter()
            .filter(|a| matches!(a.status(), "pending" | "failed"))
            .count();
        frame.render_widget(
            Line::from(vec![
                Span::styled(
                    " bottle dashboard ",
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!(
                    "· {open} open · a approve · e a path · d lasts {} · r reject · ↑↓ · q quit",
                    for_words(GRANT_FOR[self.grant_for])
                )),
            ]),
            title,
        );
        let rows = self.items.iter().map(|a| {
            let color = match a.status() {
                "pending" => Color::Yellow,
                "approved" => Color::Green,
                "failed" => Color::Red,
                _ => Color::DarkGray,
            };
            Row::new(vec![
                Cell::from(a.request.id.clone()),
                Cell::from(a.slug.clone()),
                Cell::from(Span::styled(a.status(), Style::new().fg(color))),
                Cell::from(a.effect.clone()),
            ])
        });
        let table = Table::new(
            rows,
            [
                Constraint::Length(12),
                Constraint::Length(20),
                Constraint::Length(9),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new(["ID", "BOTTLE", "STATUS", "IF APPROVED"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(" requests "));
        let mut state = TableState::default();
        if !self.items.is_empty() {
            state.select(Some(self.selected));
        }
        frame.render_stateful_widget(table, list, &mut state);
        let (title, lines): (&str, Vec<Line>) = match (&self.confirming, self.current()) {
            (Some((_, text)), _) => (
                " grant this? ",
                text.lines()
                    .map(|l| Line::styled(l.to_owned(), Style::new().fg(Color::Yellow)))
                    .collect(),
            ),
            (None, None) => (
                " request ",
                vec![Line::from(
                    "No requests yet. An agent asks with supervise's request_host_access tool.",
                )],
            ),
            (None, Some(a)) => {
                let mut l = vec![
                    Line::from(format!("{} asks for {}", a.slug, a.request.host)),
                    Line::from(format!("if approved: {}", a.effect)),
                ];
                if let Some(u) = &a.request.failed_url {
                    l.push(Line::from(format!("refused: {u}")));
                    if !bottle_contract::supervise::validate::url_is_under(u, &a.request.host) {
                        l.push(Line::styled(
                            format!(
                                "WARNING: that URL is not on {}: the request does not match what it asks for",
                                a.request.host
                            ),
                            Style::new().fg(Color::Red),
                        ));
                    }
                }
                if let Some(p) = &a.request.preview {
                    for line in requests::preview_lines(p, a.request.failed_url.as_deref()).lines()
                    {
                        l.push(Line::from(line.trim_start().to_owned()));
                    }
                }
                if let Some(d) = &a.decision {
                    if let Some(e) = &d.apply_error {
                        l.push(Line::styled(
                            format!("not applied: {e}"),
                            Style::new().fg(Color::Red),
                        ));
                    } else if !d.note.is_empty() {
                        l.push(Line::from(format!("note: {}", d.note)));
                    }
                }
                if let Some(p) = &a.problem {
                    l.push(Line::styled(p.clone(), Style::new().fg(Color::Red)));
                }
                // Last: a long reason wraps below the rest, never over it.
                l.push(Line::styled(
                    format!("reason (the agent's words): {}", a.request.reason),
                    Style::new().fg(Color::DarkGray),
                ));
                (" request ", l)
            }
        };
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(title)),
            detail,
        );
        let line = match (&self.prompt, &self.message) {
            _ if self.confirming.is_some() => Line::styled(
                "Grant it? y grants · any other key cancels",
                Style::new().add_modifier(Modifier::BOLD),
            ),
            (Some((Prompt::Note, t)), _) => {
                Line::from(format!("reject with note (Enter sends, Esc cancels): {t}▏"))
            }
            (Some((Prompt::PathPrefix, t)), _) => Line::from(format!(
                "approve only the path prefix (Enter approves, Esc cancels): {t}▏"
            )),
            (None, Some((m, true))) => Line::styled(m.clone(), Style::new().fg(Color::Red)),
            (None, Some((m, false))) => Line::styled(m.clone(), Style::new().fg(Color::Green)),
            (None, None) => Line::from(""),
        };
        frame.render_widget(line, bottom);
    }
}

/// Run the dashboard over the bottles under `root` until the human quits; `now` gives the
/// time decisions are stamped with.
pub fn run(env: &HostEnv, root: &Path, now: fn() -> String) -> std::io::Result<()> {
    let mut watch = QueueWatch::new(root);
    let mut dash = Dashboard::new(requests::list(root, None));
    let mut terminal = ratatui::init();
    let mut last_list = std::time::Instant::now();
    // The approval the screen shows for a `y`, worked out and not yet granted.
    let mut pending: Option<(String, requests::Pending)> = None;
    let result = (|| {
        loop {
            terminal.draw(|f| dash.render(f))?;
            if event::poll(Duration::from_millis(200))? {
                let Event::Key(key) = event::read()? else {
                    continue;
                };
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                match dash.key(key.code) {
                    Action::Quit => return Ok(()),
                    Action::Nothing => {}
                    Action::Review {
                        id,
                        path_prefix,
                        for_duration,
                    } => {
                        let opts = ApproveOptions {
                            path_prefix,
                            for_duration,
                            shown: dash.shown(&id),
                            by: "bottle dashboard".into(),
                            ..ApproveOptions::default()
                        };
                        match requests::prepare_approval(env, root, &id, &opts) {
                            Ok(p) => {
                                dash.confirm(id.clone(), p.describe());
                                pending = Some((id, p));
                            }
                            Err(e) => dash.report(e.to_string(), true),
                        }
                    }
                    Action::Grant { id } => {
                        let Some((_, p)) = pending.take().filter(|(shown, _)| *shown == id) else {
                            continue;
                        };
                        dash.report(format!("applying {id}…"), false);
                        terminal.draw(|f| dash.render(f))?;
                        match requests::grant(env, root, p, "", &now()) {
                            Ok(done) => dash.report(
                                format!(
                                    "approved {id}: the agent can reach {} now ({})",
                                    done.access.describe(),
                                    done.confirmed
                                ),
                                false,
                            ),
                            Err(e) => dash.report(e.to_string(), true),
                        }
                        dash.answered(requests::list(root, None));
                    }
                    Action::Reject { id, note } => {
                        match requests::reject(root, &id, &note, &now(), "bottle dashboard") {
                            Ok(_) => dash.report(format!("rejected {id}"), false),
                            Err(e) => dash.report(e.to_string(), true),
                        }
                        dash.answered(requests::list(root, None));
                    }
                }
            }
            // Also every few seconds, for where watching is not possible.
            if watch.wait(Duration::ZERO) || last_list.elapsed() > Duration::from_secs(3) {
                dash.set_items(requests::list(root, None));
                last_list = std::time::Instant::now();
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::supervise::{Request, RequestKind};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn asked(id: &str, host: &str, reason: &str) -> Asked {
        let request = Request {
            id: id.into(),
            kind: RequestKind::HostAccess,
            host: host.into(),
            path_prefix: None,
            reason: reason.into(),
            failed_url: Some(format!("https://{host}/simple/")),
            created: format!("2026-11-28T00:00:0{}Z", id.len() % 10),
            preview: None,
        };
        Asked {
            slug: "coder-a1b2c".into(),
            effect: request.effect(),
            request,
            decision: None,
            problem: None,
            grant: None,
        }
    }

    fn screen(d: &Dashboard) -> String {
        let mut t = Terminal::new(TestBackend::new(100, 18)).unwrap();
        t.draw(|f| d.render(f)).unwrap();
        let buf = t.backend().buffer();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_screen_lists_requests_with_their_effect_and_the_selected_ones_reason() {
        let d = Dashboard::new(vec![
            asked("r1", "pypi.org", "pip install requests"),
            asked("r22", "crates.io", "cargo build"),
        ]);
        // The screen as a golden file; `UPDATE_GOLDEN=1` rewrites it.
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/dashboard.txt");
        let actual = screen(&d);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&file, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(
            actual,
            expected,
            "UPDATE_GOLDEN=1 rewrites {}",
            file.display()
        );
    }

    #[test]
    fn keys_approve_reject_with_a_note_and_edit_the_path() {
        let mut d = Dashboard::new(vec![
            asked("r1", "pypi.org", "pip"),
            asked("r22", "crates.io", "cargo"),
        ]);
        assert_eq!(
            d.key(KeyCode::Char('a')),
            Action::Review {
                id: "coder-a1b2c/r1".into(),
                path_prefix: None,
                for_duration: None
            }
        );
        // What it grants is shown, and only `y` grants it; a stray key does not.
        d.confirm("coder-a1b2c/r1".into(), "grants: pypi.org".into());
        let s = screen(&d);
        assert!(
            s.contains("grants: pypi.org") && s.contains("Grant it? y grants"),
            "{s}"
        );
        assert_eq!(d.key(KeyCode::Char('a')), Action::Nothing);
        assert!(screen(&d).contains("not granted: coder-a1b2c/r1 stays open"));
        d.confirm("coder-a1b2c/r1".into(), "grants: pypi.org".into());
        assert_eq!(
            d.key(KeyCode::Char('y')),
            Action::Grant {
                id: "coder-a1b2c/r1".into()
            }
        );
        d.key(KeyCode::Down);
        d.key(KeyCode::Char('r'));
        for c in "no thanks".chars() {
            d.key(KeyCode::Char(c));
        }
        assert!(screen(&d).contains("reject with note (Enter sends, Esc cancels): no thanks"));
        assert_eq!(
            d.key(KeyCode::Enter),
            Action::Reject {
                id: "coder-a1b2c/r22".into(),
                note: "no thanks".into()
            }
        );
        // `d` chooses how long the next approvals last, and the screen says so.
        d.key(KeyCode::Char('d'));
        assert!(screen(&d).contains("d lasts for 10m"), "{}", screen(&d));
        d.key(KeyCode::Char('e'));
        for c in "simple/".chars() {
            d.key(KeyCode::Char(c));
        }
        assert_eq!(
            d.key(KeyCode::Enter),
            Action::Review {
                id: "coder-a1b2c/r22".into(),
                path_prefix: Some("/simple/".into()),
                for_duration: Some(Duration::from_secs(600))
            }
        );
        for _ in 1..GRANT_FOR.len() {
            d.key(KeyCode::Char('d'));
        }
        assert!(screen(&d).contains("d lasts for the run"));
        // Esc leaves a prompt without acting; q quits.
        d.key(KeyCode::Char('r'));
        assert_eq!(d.key(KeyCode::Esc), Action::Nothing);
        assert_eq!(d.key(KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn a_failed_approval_shows_why_in_red_and_answered_ones_cannot_be_approved() {
        let mut failed = asked("r1", "pypi.org", "pip");
        failed.decision = Some(bottle_contract::supervise::Decision {
            id: "r1".into(),
            decision: bottle_contract::supervise::Verdict::Approved,
            note: String::new(),
            applied: false,
            apply_error: Some("egress refused the new file".into()),
            decided: "t".into(),
            by: "bottle approve".into(),
        });
        let mut done = asked("r22", "crates.io", "cargo");
        done.decision = Some(bottle_contract::supervise::Decision {
            decision: bottle_contract::supervise::Verdict::Rejected,
            id: "r22".into(),
            ..failed.decision.clone().unwrap()
        });
        let mut d = Dashboard::new(vec![done, failed]);
        let s = screen(&d);
        assert!(
            s.contains("failed") && s.contains("not applied: egress refused the new file"),
            "{s}"
        );
        d.key(KeyCode::Down);
        assert_eq!(d.key(KeyCode::Char('a')), Action::Nothing);
        assert!(screen(&d).contains("nothing open is selected"));
    }
}
