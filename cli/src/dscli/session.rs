//! Modes and the per-command plumbing: single-shot, script (`-script FILE`), interactive
//! (`dscli>` on a terminal) and commands piped on stdin (each command's output preceded by
//! `dscli> ` on the same line, as DS CLI does). One connection serves the whole session.
//!
//! Exit codes: single-shot = the command's code; script and piped stdin = the code of the
//! last failing command (0 if none); interactive = 0 (DS CLI gives no codes there).
//! Within one command, every object is attempted in order and the code is that of the LAST
//! failed object. All messages, errors included, go to stdout; the exit code tells failure.

use super::client::{Client, Target};
use super::messages::{self, Message, exit};
use super::settings::{Effective, Settings};
use super::verb::{self, Invocation, SyntaxError};
use super::{banner, commands, tokenizer};
use flashtrack::control::{Reply, Request, Response};
use flashtrack::id::ImageId;
use std::io::{BufRead, Write};

/// Why a command stopped early: an exit code (its message already printed), or stdout is
/// gone (EPIPE): end quietly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Code(u8),
    Pipe,
}

pub type Res<T = u8> = Result<T, Stop>;

/// Standard output that turns a closed pipe into [`Stop::Pipe`], never a panic.
pub struct Out {
    w: Box<dyn Write>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Out")
    }
}

impl Out {
    pub fn new(w: Box<dyn Write>) -> Out {
        Out { w }
    }
    pub fn text(&mut self, s: &str) -> Res<()> {
        self.w.write_all(s.as_bytes()).map_err(pipe)
    }
    pub fn line(&mut self, s: &str) -> Res<()> {
        self.text(s)?;
        self.text("\n")
    }
    pub fn flush(&mut self) -> Res<()> {
        self.w.flush().map_err(pipe)
    }
}

/// Any write failure ends output; EPIPE (`dscli lsfbvol | head -1`) is the usual one and is
/// not an error worth a message (there is nowhere left to print it).
fn pipe(_: std::io::Error) -> Stop {
    Stop::Pipe
}

/// Input lines: the command stream in stdin mode, answers to `[y/n]`, IDs for `-`.
pub struct Input {
    r: Box<dyn BufRead>,
    pub tty: bool,
    /// Line editing and history for commands at an interactive terminal prompt.
    editor: Option<rustyline::DefaultEditor>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Input(tty: {})", self.tty)
    }
}

impl Input {
    pub fn new(r: Box<dyn BufRead>, tty: bool) -> Input {
        Input { r, tty, editor: None }
    }

    /// Edit command lines with rustyline (interactive mode on a terminal only: a pipe or a
    /// script gets plain reads, byte for byte).
    pub fn with_line_editing(mut self) -> Input {
        if self.tty {
            self.editor = rustyline::DefaultEditor::new().ok();
        }
        self
    }

    /// Whether command lines come through the line editor (it prints the prompt itself).
    pub fn edits(&self) -> bool {
        self.editor.is_some()
    }

    /// The next command line: through the editor (prompt shown, history kept) when there is
    /// one, else a plain line. None at EOF (Ctrl-D) or Ctrl-C at an empty prompt.
    pub fn command(&mut self, prompt: &str) -> Option<String> {
        let Some(ed) = self.editor.as_mut() else { return self.line() };
        match ed.readline(prompt) {
            Ok(l) => {
                if !l.trim().is_empty() {
                    let _ = ed.add_history_entry(l.as_str());
                }
                Some(l)
            }
            Err(_) => None,
        }
    }
    /// The next line without its newline, or None at EOF.
    pub fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.r.read_line(&mut s) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(s.trim_end_matches(['\n', '\r']).to_string()),
        }
    }
    /// Everything left, for `-`.
    pub fn rest(&mut self) -> String {
        let mut s = String::new();
        while let Some(l) = self.line() {
            s.push_str(&l);
            s.push('\n');
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Single,
    Script,
    Stdin,
    Interactive,
}

#[derive(Debug)]
pub struct Session {
    pub out: Out,
    pub input: Input,
    pub mode: Mode,
    pub settings: Settings,
    pub target: Result<Target, String>,
    client: Option<Client>,
}

impl Session {
    pub fn new(out: Out, input: Input, mode: Mode, settings: Settings, target: Result<Target, String>) -> Session {
        Session { out, input, mode, settings, target, client: None }
    }

    /// Runs one command line (already split into words). Returns its exit code.
    pub fn run_words(&mut self, words: &[String]) -> Res {
        let Some(name) = words.first() else {
            return Ok(exit::OK);
        };
        let Some(verb) = verb::find(name) else {
            self.out.line(&messages::UNKNOWN_COMMAND.line("dscli", &[name]))?;
            return Ok(exit::SYNTAX);
        };
        let interactive = matches!(self.mode, Mode::Interactive | Mode::Stdin);
        let mut inv = match verb::parse(verb, &words[1..], interactive) {
            Ok(inv) => inv,
            Err(e) => return self.syntax(verb.name, e),
        };
        if inv.help {
            self.out.text(&verb.usage())?;
            return Ok(exit::OK);
        }
        if let Some(d) = inv.flag("-dev")
            && d.parse::<ImageId>().is_err()
        {
            return self.syntax(verb.name, SyntaxError::new(messages::MALFORMED_ID, &[d, "storage image"]));
        }
        if inv.stdin_ids {
            let rest = self.input.rest();
            inv.ids.extend(rest.split_whitespace().map(String::from));
            if inv.ids.is_empty() {
                return self.syntax(verb.name, SyntaxError::new(messages::MISSING_IDS, &[]));
            }
        }
        match commands::run(self, &inv) {
            Ok(code) | Err(Stop::Code(code)) => {
                self.out.flush()?;
                Ok(code)
            }
            Err(Stop::Pipe) => Err(Stop::Pipe),
        }
    }

    /// Prints a syntax error; exit 2.
    pub fn syntax(&mut self, verb: &str, e: SyntaxError) -> Res {
        self.out.line(&e.line(verb))?;
        Ok(exit::SYNTAX)
    }

    /// Prints a message line and stops the command with `code`.
    pub fn fail<T>(&mut self, line: String, code: u8) -> Res<T> {
        self.out.line(&line)?;
        Err(Stop::Code(code))
    }

    pub fn effective(&self, inv: &Invocation) -> Effective {
        self.settings.effective(Some(inv))
    }

    /// Banner (unless off) and the empty line after it.
    pub fn banner(&mut self, inv: &Invocation, image: Option<&ImageId>) -> Res<()> {
        if self.effective(inv).banner {
            let img = image.map(ImageId::to_string);
            self.out.line(&banner::current(img.as_deref()))?;
            self.out.line("")?;
        }
        Ok(())
    }

    /// The storage image a command works on: fully qualified IDs, else `-dev`/`devid`, else
    /// the only image flashd knows.
    pub fn image(&mut self, inv: &Invocation, from_ids: Option<ImageId>) -> Res<ImageId> {
        let verb = inv.verb.name;
        let own_dev: Option<ImageId> = inv.flag("-dev").and_then(|d| d.parse().ok());
        if let (Some(a), Some(b)) = (&own_dev, &from_ids)
            && a != b
        {
            return self.fail(messages::IMAGE_CONFLICT.line(verb, &[&a.to_string(), &b.to_string()]), exit::SYNTAX);
        }
        if let Some(img) = from_ids.or_else(|| self.effective(inv).devid) {
            return Ok(img);
        }
        match self.query(verb, Request::ImageList)? {
            Reply::Images(mut list) if list.len() == 1 => Ok(list.remove(0).id),
            Reply::Images(list) => self.fail(messages::NO_IMAGE.line(verb, &[&list.len().to_string()]), exit::SYNTAX),
            other => self.protocol(verb, &other),
        }
    }

    /// The connection, made on first use.
    fn client(&mut self, verb: &str) -> Res<&mut Client> {
        if self.client.is_none() {
            let target = self.target.clone();
            let made = match &target {
                Ok(t) => Client::connect(t).map_err(|e| (t.display(), e.0)),
                Err(why) => Err(("-".to_string(), why.clone())),
            };
            match made {
                Ok(c) => self.client = Some(c),
                Err((where_, why)) => {
                    return self.fail(messages::CONNECT_FAILED.line(verb, &[&where_, &why]), exit::CONNECTION);
                }
            }
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Sends one request; only connection failures stop here.
    pub fn request(&mut self, verb: &str, req: Request) -> Res<Response> {
        let result = self.client(verb)?.call(req);
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                self.client = None;
                let where_ = self.target.as_ref().map(Target::display).unwrap_or_default();
                self.fail(messages::CONNECT_FAILED.line(verb, &[&where_, &e.0]), exit::CONNECTION)
            }
        }
    }

    /// Sends a request whose failure fails the whole command.
    pub fn query(&mut self, verb: &str, req: Request) -> Res<Reply> {
        match self.request(verb, req)? {
            Response::Ok(r) => Ok(r),
            Response::Err(e) => {
                let (line, code) = messages::engine_line(verb, &e);
                self.fail(line, code)
            }
        }
    }

    pub fn protocol<T>(&mut self, verb: &str, reply: &Reply) -> Res<T> {
        let what = format!("{reply:?}");
        let what: String = what.chars().take(60).collect();
        self.fail(messages::PROTOCOL.line(verb, &[&what]), exit::CONNECTION)
    }

    /// The daemon's Hello facts (connecting if needed).
    pub fn hello(&mut self, verb: &str) -> Res<super::client::Hello> {
        Ok(self.client(verb)?.hello.clone())
    }

    /// Asks `[y/n]`; true only for `y`/`Y`. Off a terminal the answer is echoed so a
    /// transcript reads naturally.
    pub fn confirm(&mut self, verb: &str, msg: Message, object: &str) -> Res<bool> {
        self.out.text(&msg.line(verb, &[object]))?;
        self.out.flush()?;
        let answer = self.input.line();
        if !self.input.tty {
            self.out.line(answer.as_deref().unwrap_or(""))?;
        }
        Ok(matches!(answer.as_deref().map(str::trim), Some("y" | "Y")))
    }

    /// Script mode: every line, last failing code.
    pub fn run_script(&mut self, text: &str) -> Res {
        let mut last = exit::OK;
        for line in text.lines() {
            let code = match tokenizer::split(line) {
                Ok(words) if words.is_empty() => continue,
                Ok(words) if is_exit(&words) => break,
                Ok(words) => self.run_words(&words)?,
                Err(_) => self.syntax("dscli", SyntaxError::new(messages::QUOTE, &[line.trim()]))?,
            };
            if code != exit::OK {
                last = code;
            }
        }
        Ok(last)
    }

    /// Interactive or piped-stdin mode.
    pub fn run_prompt(&mut self) -> Res {
        let mut last = exit::OK;
        loop {
            let editing = self.mode == Mode::Interactive && self.input.edits();
            if self.mode == Mode::Interactive && !editing {
                self.out.text("dscli> ")?;
                self.out.flush()?;
            }
            let next = if editing { self.input.command("dscli> ") } else { self.input.line() };
            let Some(line) = next else {
                if self.mode == Mode::Interactive {
                    self.out.line("")?;
                }
                break;
            };
            let words = match tokenizer::split(&line) {
                Ok(w) if w.is_empty() => continue,
                Ok(w) => w,
                Err(_) => {
                    self.prompt_echo()?;
                    last = self.syntax("dscli", SyntaxError::new(messages::QUOTE, &[line.trim()]))?;
                    continue;
                }
            };
            self.prompt_echo()?;
            if is_exit(&words) {
                self.out.line("")?;
                break;
            }
            let code = self.run_words(&words)?;
            if code != exit::OK {
                last = code;
            }
            self.out.flush()?;
        }
        Ok(if self.mode == Mode::Interactive { exit::OK } else { last })
    }

    /// Piped stdin: the prompt precedes the command's output on the same line.
    fn prompt_echo(&mut self) -> Res<()> {
        if self.mode == Mode::Stdin { self.out.text("dscli> ") } else { Ok(()) }
    }
}

fn is_exit(words: &[String]) -> bool {
    words.len() == 1 && matches!(words[0].as_str(), "exit" | "quit")
}
