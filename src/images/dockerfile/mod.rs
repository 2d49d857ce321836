//! Dockerfiles (pure: text in, instructions out). [`parse`] reads parser directives
//! (`# escape=`, `# syntax=docker/dockerfile…`), joins continuation lines, drops comments
//! and turns each logical line into an [`Instruction`], refusing with the file and line what
//! stockade does not build: heredocs, multi-stage builds (`COPY --from`, a second `FROM`),
//! `ADD` of a URL, `RUN --mount`, `VOLUME`, `HEALTHCHECK`, `ONBUILD`, `MAINTAINER`.
//!
//! Variables are substituted where Docker substitutes them (`FROM`, `COPY`, `ADD`, `ENV`,
//! `ARG`, `WORKDIR`, `USER`, `LABEL`, `EXPOSE`, `STOPSIGNAL`), at build time from the build
//! arguments and environment in force at that line ([`words::expand`]); `RUN`, `CMD`,
//! `ENTRYPOINT` and `SHELL` are left to the shell.

pub mod lines;
pub mod words;

#[cfg(test)]
mod tests;

use thiserror::Error;

/// A Dockerfile line stockade cannot build; renders as `FILE:LINE: reason`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file}:{line}: {reason}")]
pub struct DockerfileError {
    /// The Dockerfile's name as the user gave it.
    pub file: String,
    /// The 1-based line (of the instruction's first line).
    pub line: usize,
    /// What is wrong, one line.
    pub reason: String,
}

impl DockerfileError {
    /// An error at `file:line`.
    pub fn at(file: &str, line: usize, reason: impl Into<String>) -> DockerfileError {
        DockerfileError {
            file: file.to_string(),
            line,
            reason: reason.into().replace('\n', " "),
        }
    }
}

/// A command as `RUN`, `CMD` and `ENTRYPOINT` take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Shell form: run by the image's shell (`SHELL`, `/bin/sh -c` by default).
    Shell(String),
    /// Exec form (a JSON array): the argv itself.
    Exec(Vec<String>),
}

/// `COPY` and `ADD`: raw (unexpanded) sources, destination and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// Source paths relative to the build context (words, not yet expanded).
    pub sources: Vec<String>,
    /// The destination (a word, not yet expanded).
    pub dest: String,
    /// `--chown=USER[:GROUP]` (numeric IDs only; a word, not yet expanded).
    pub chown: Option<String>,
}

/// One instruction, its arguments as written (substitution is the builder's, line by line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM image` (`scratch` for none); its name is a word to expand.
    From(String),
    /// `RUN`.
    Run(Command),
    /// `COPY`.
    Copy(CopySpec),
    /// `ADD` (local files; a local tar archive is extracted).
    Add(CopySpec),
    /// `ENV k=v …` or `ENV k v`: raw key and value words.
    Env(Vec<(String, String)>),
    /// `ARG name[=default] …`.
    Arg(Vec<(String, Option<String>)>),
    /// `WORKDIR dir`.
    Workdir(String),
    /// `USER uid[:gid]`.
    User(String),
    /// `LABEL k=v …`.
    Label(Vec<(String, String)>),
    /// `EXPOSE port[/proto] …`.
    Expose(Vec<String>),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `SHELL ["exe", "arg"]`.
    Shell(Vec<String>),
    /// `STOPSIGNAL sig`.
    StopSignal(String),
}

/// One instruction and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Its first line.
    pub line: usize,
    /// The logical line as written (continuations joined), for history and the cache.
    pub text: String,
    /// The instruction.
    pub instruction: Instruction,
}

/// A parsed Dockerfile: one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The file's name, for errors.
    pub file: String,
    /// Its directives.
    pub directives: lines::Directives,
    /// `ARG`s before `FROM` (usable in `FROM` only, unless redeclared after it).
    pub global_args: Vec<(String, Option<String>)>,
    /// Line of the `FROM`.
    pub from_line: usize,
    /// The `FROM` image word.
    pub from: String,
    /// The instructions after `FROM`.
    pub steps: Vec<Step>,
}

/// Parses a Dockerfile's `text`; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, DockerfileError> {
    let (directives, logical) = lines::logical_lines(file, text)?;
    let escape = directives.escape;
    let mut global_args = Vec::new();
    let mut from: Option<(usize, String)> = None;
    let mut steps = Vec::new();
    for l in logical {
        let text = l.text.trim();
        let (keyword, rest) = match text.find(char::is_whitespace) {
            Some(i) => (&text[..i], text[i..].trim()),
            None => (text, ""),
        };
        let err = |reason: String| DockerfileError::at(file, l.line, reason);
        let kw = keyword.to_ascii_uppercase();
        let instruction = instruction(&kw, rest, escape).map_err(err)?;
        match (&from, instruction) {
            (None, Instruction::Arg(a)) => global_args.extend(a),
            (None, Instruction::From(image)) => from = Some((l.line, image)),
            (None, _) => return Err(err(format!("{kw} before FROM (only ARG may come first)"))),
            (Some(_), Instruction::From(_)) => {
                return Err(err(
                    "a second FROM: multi-stage builds are not supported".into()
                ))
            }
            (Some(_), instruction) => steps.push(Step {
                line: l.line,
                text: text.to_string(),
                instruction,
            }),
        }
    }
    let Some((from_line, from)) = from else {
        return Err(DockerfileError::at(file, 1, "no FROM instruction"));
    };
    Ok(Dockerfile {
        file: file.to_string(),
        directives,
        global_args,
        from_line,
        from,
        steps,
    })
}

/// Leading `--name[=value]` flags of `rest` and what follows them.
fn flags(rest: &str) -> Result<(Vec<(String, String)>, String), String> {
    let mut out = Vec::new();
    let mut remaining = rest.trim_start();
    while let Some(after) = remaining.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let flag = &after[..end];
        let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
        if flag.is_empty() {
            // As Docker: a lone `--` ends the flags.
            remaining = after[end..].trim_start();
            break;
        }
        if name.is_empty() {
            return Err(format!("`--{flag}` is not a flag"));
        }
        out.push((name.to_string(), value.to_string()));
        remaining = after[end..].trim_start();
    }
    Ok((out, remaining.to_string()))
}

fn no_flags(kw: &str, f: &[(String, String)]) -> Result<(), String> {
    match f.first() {
        Some((name, _)) => Err(format!("{kw} --{name}: flag not supported")),
        None => Ok(()),
    }
}

fn command(rest: &str) -> Command {
    match words::json_array(rest) {
        Some(argv) => Command::Exec(argv),
        None => Command::Shell(rest.to_string()),
    }
}

/// A heredoc (`<<EOF`, `<<-EOF`, `<<"EOF"`) in a RUN, COPY or ADD.
fn has_heredoc(rest: &str) -> bool {
    rest.match_indices("<<").any(|(i, _)| {
        let after = rest[i + 2..].trim_start_matches('-');
        after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '"' || c == '\'')
    })
}

/// `k=v` pairs (ENV, LABEL), or the legacy `k v` form when `legacy` allows it.
fn pairs(
    kw: &str,
    rest: &str,
    escape: char,
    legacy: bool,
) -> Result<Vec<(String, String)>, String> {
    let ws = words::split(rest, escape)?;
    if ws.is_empty() {
        return Err(format!("{kw} needs at least one KEY=VALUE"));
    }
    if !ws[0].contains('=') {
        if !legacy {
            return Err(format!("{kw} `{}`: expected KEY=VALUE", ws[0]));
        }
        let key = ws[0].clone();
        let value = rest.trim_start()[key.len()..].trim().to_string();
        if value.is_empty() {
            return Err(format!("{kw} {key}: needs a value"));
        }
        return Ok(vec![(key, value)]);
    }
    ws.into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{kw} `{w}`: expected KEY=VALUE")),
        })
        .collect()
}

fn instruction(kw: &str, rest: &str, escape: char) -> Result<Instruction, String> {
    let needs_args = |what: &str| -> Result<(), String> {
        if rest.is_empty() {
            Err(format!("{kw} needs {what}"))
        } else {
            Ok(())
        }
    };
    Ok(match kw {
        "FROM" => {
            let (f, rest) = flags(rest)?;
            no_flags(kw, &f)?;
            let ws = words::split(&rest, escape)?;
            match ws.as_slice() {
                [image] => Instruction::From(image.clone()),
                [_, as_kw, _] if as_kw.eq_ignore_ascii_case("as") => {
                    return Err("FROM … AS name: multi-stage builds are not supported".into())
                }
                _ => return Err("FROM takes one image name".into()),
            }
        }
        "RUN" => {
            needs_args("a command")?;
            let (f, rest) = flags(rest)?;
            no_flags(kw, &f)?;
            if has_heredoc(&rest) {
                return Err("RUN with a heredoc (<<): heredocs are not supported".into());
            }
            Instruction::Run(command(&rest))
        }
        "CMD" => {
            needs_args("a command")?;
            Instruction::Cmd(command(rest))
        }
        "ENTRYPOINT" => {
            needs_args("a command")?;
            Instruction::Entrypoint(command(rest))
        }
        "SHELL" => match words::json_array(rest) {
            Some(v) if !v.is_empty() => Instruction::Shell(v),
            _ => return Err("SHELL takes a JSON array, e.g. [\"/bin/sh\", \"-c\"]".into()),
        },
        "COPY" | "ADD" => {
            let (f, rest) = flags(rest)?;
            let mut chown = None;
            for (name, value) in f {
                match name.as_str() {
                    "chown" if !value.is_empty() => chown = Some(value),
                    "from" => {
                        return Err(format!(
                            "{kw} --from: multi-stage builds are not supported"
                        ))
                    }
                    _ => return Err(format!("{kw} --{name}: flag not supported")),
                }
            }
            if has_heredoc(&rest) {
                return Err(format!("{kw} with a heredoc (<<): heredocs are not supported"));
            }
            let ws = match words::json_array(&rest) {
                // Exec form: each element is a word as if it had been quoted.
                Some(v) => v
                    .into_iter()
                    .map(|s| format!("'{}'", s.replace('\'', "'\"'\"'")))
                    .collect(),
                None => words::split(&rest, escape)?,
            };
            if ws.len() < 2 {
                return Err(format!("{kw} needs at least one source and a destination"));
            }
            let mut ws = ws;
            let dest = ws.pop().unwrap_or_default();
            let spec = CopySpec {
                sources: ws,
                dest,
                chown,
            };
            if kw == "COPY" {
                Instruction::Copy(spec)
            } else {
                Instruction::Add(spec)
            }
        }
        "ENV" => Instruction::Env(pairs(kw, rest, escape, true)?),
        "LABEL" => Instruction::Label(pairs(kw, rest, escape, false)?),
        "ARG" => {
            let ws = words::split(rest, escape)?;
            if ws.is_empty() {
                return Err("ARG needs a name".into());
            }
            let mut out = Vec::new();
            for w in ws {
                let (name, default) = match w.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (w.clone(), None),
                };
                let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!("ARG `{name}`: not a variable name"));
                }
                out.push((name, default));
            }
            Instruction::Arg(out)
        }
        "WORKDIR" => {
            needs_args("a directory")?;
            Instruction::Workdir(rest.to_string())
        }
        "USER" => {
            needs_args("a user")?;
            Instruction::User(rest.to_string())
        }
        "EXPOSE" => {
            needs_args("a port")?;
            Instruction::Expose(words::split(rest, escape)?)
        }
        "STOPSIGNAL" => {
            needs_args("a signal")?;
            Instruction::StopSignal(rest.to_string())
        }
        "VOLUME" => {
            return Err("VOLUME is not supported: a sandbox's storage comes from its policy (--workspace, -v, --tmpfs)".into())
        }
        "HEALTHCHECK" => {
            return Err("HEALTHCHECK is not supported: stockade does not run health checks".into())
        }
        "ONBUILD" => return Err("ONBUILD is not supported".into()),
        "MAINTAINER" => {
            return Err("MAINTAINER is not supported (it is deprecated); use LABEL maintainer=…".into())
        }
        other => return Err(format!("unknown instruction {other}")),
    })
}
