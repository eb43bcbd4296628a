//! Argo's boolean expressions: `depends` (`A.Succeeded && (B.Failed || !C)`)
//! and `when` (`{{tasks.flip.outputs.result}} == heads`, after
//! substitution). One small parser; the caller says what a bare word means.
//!
//! Grammar: `or := and ("||" and)*`, `and := not ("&&" not)*`,
//! `not := "!" not | cmp`, `cmp := atom (("=="|"!="|"<"|"<="|">"|">=") atom)?`,
//! `atom := "(" or ")" | word | 'str' | "str" | number`.

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Bool(bool),
    Num(f64),
    Str(String),
}

impl Val {
    fn truthy(&self) -> Result<bool, String> {
        match self {
            Val::Bool(b) => Ok(*b),
            Val::Str(s) if s == "true" => Ok(true),
            Val::Str(s) if s == "false" => Ok(false),
            other => Err(format!("{other:?} is not true or false")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
}

fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        if let Some(op) = ["&&", "||", "==", "!=", "<=", ">="]
            .into_iter()
            .find(|o| *o == two)
        {
            out.push(Tok::Op(op));
            i += 2;
            continue;
        }
        match c {
            '(' => out.push(Tok::LParen),
            ')' => out.push(Tok::RParen),
            '!' => out.push(Tok::Op("!")),
            '<' => out.push(Tok::Op("<")),
            '>' => out.push(Tok::Op(">")),
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| format!("an unclosed {c} quote in {text:?}"))?;
                out.push(Tok::Str(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
                continue;
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(
                        chars[i],
                        '(' | ')' | '!' | '<' | '>' | '=' | '&' | '|' | '\'' | '"'
                    )
                {
                    i += 1;
                }
                if i == start {
                    return Err(format!("unexpected {c:?} in {text:?}"));
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
                continue;
            }
        }
        i += 1;
    }
    Ok(out)
}

struct Parser<'a, F: FnMut(&str) -> Result<Val, String>> {
    toks: Vec<Tok>,
    pos: usize,
    word: &'a mut F,
    text: &'a str,
}

impl<F: FnMut(&str) -> Result<Val, String>> Parser<'_, F> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn or(&mut self) -> Result<Val, String> {
        let mut v = self.and()?;
        while self.peek() == Some(&Tok::Op("||")) {
            self.pos += 1;
            let r = self.and()?;
            v = Val::Bool(v.truthy()? || r.truthy()?);
        }
        Ok(v)
    }
    fn and(&mut self) -> Result<Val, String> {
        let mut v = self.not()?;
        while self.peek() == Some(&Tok::Op("&&")) {
            self.pos += 1;
            let r = self.not()?;
            v = Val::Bool(v.truthy()? && r.truthy()?);
        }
        Ok(v)
    }
    fn not(&mut self) -> Result<Val, String> {
        if self.peek() == Some(&Tok::Op("!")) {
            self.pos += 1;
            let v = self.not()?;
            return Ok(Val::Bool(!v.truthy()?));
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Result<Val, String> {
        let l = self.atom()?;
        let op = match self.peek() {
            Some(Tok::Op(op)) if matches!(*op, "==" | "!=" | "<" | "<=" | ">" | ">=") => *op,
            _ => return Ok(l),
        };
        self.pos += 1;
        let r = self.atom()?;
        let ord = match (&l, &r) {
            (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
            (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
            _ => Some(text_of(&l).cmp(&text_of(&r))),
        };
        let ord = ord.ok_or_else(|| format!("cannot compare in {:?}", self.text))?;
        use std::cmp::Ordering::*;
        Ok(Val::Bool(match op {
            "==" => ord == Equal,
            "!=" => ord != Equal,
            "<" => ord == Less,
            "<=" => ord != Greater,
            ">" => ord == Greater,
            _ => ord != Less,
        }))
    }
    fn atom(&mut self) -> Result<Val, String> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or_else(|| format!("{:?} ends too early", self.text))?;
        self.pos += 1;
        match tok {
            Tok::LParen => {
                let v = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(format!("a missing ) in {:?}", self.text));
                }
                self.pos += 1;
                Ok(v)
            }
            Tok::Str(s) => Ok(Val::Str(s)),
            Tok::Word(w) => {
                if let Ok(n) = w.parse::<f64>() {
                    return Ok(Val::Num(n));
                }
                match w.as_str() {
                    "true" => Ok(Val::Bool(true)),
                    "false" => Ok(Val::Bool(false)),
                    _ => (self.word)(&w),
                }
            }
            other => Err(format!("unexpected {other:?} in {:?}", self.text)),
        }
    }
}

fn text_of(v: &Val) -> String {
    match v {
        Val::Bool(b) => b.to_string(),
        Val::Num(n) => n.to_string(),
        Val::Str(s) => s.clone(),
    }
}

/// Evaluates `text`; `word` gives the value of each bare word.
pub fn eval(text: &str, mut word: impl FnMut(&str) -> Result<Val, String>) -> Result<Val, String> {
    let toks = tokens(text)?;
    if toks.is_empty() {
        return Err("an empty expression".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        word: &mut word,
        text,
    };
    let v = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!(
            "unexpected text after position {} in {text:?}",
            p.pos
        ));
    }
    Ok(v)
}

/// A `when` condition after substitution: bare words are strings.
pub fn when(text: &str) -> Result<bool, String> {
    eval(text, |w| Ok(Val::Str(w.to_string())))?.truthy()
}

/// The results a `depends` clause may test.
pub const RESULTS: &[&str] = &[
    "Succeeded",
    "Failed",
    "Errored",
    "Skipped",
    "Omitted",
    "Daemoned",
    "AnySucceeded",
    "AllFailed",
];

/// The task names a `depends` clause mentions (`A.Succeeded` and bare `A`).
pub fn depends_tasks(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut problem = None;
    eval(text, |w| {
        let (task, result) = split_depends_word(w);
        if let Some(r) = result {
            if !RESULTS.contains(&r) {
                problem.get_or_insert(format!(
                    "{w:?}: {r:?} is not a task result; use one of {}",
                    RESULTS.join(", ")
                ));
            }
        }
        if !names.iter().any(|n| n == task) {
            names.push(task.to_string());
        }
        Ok(Val::Bool(true))
    })?;
    match problem {
        Some(p) => Err(p),
        None => Ok(names),
    }
}

/// `A.Succeeded` -> (`A`, Some(`Succeeded`)); a bare `A` -> (`A`, None).
/// Task names may hold dots only if no result follows, as in Argo.
pub fn split_depends_word(w: &str) -> (&str, Option<&str>) {
    match w.rsplit_once('.') {
        Some((task, result))
            if RESULTS.contains(&result)
                || result
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase()) =>
        {
            (task, Some(result))
        }
        _ => (w, None),
    }
}

/// Evaluates `depends` given each task's phase (Argo's words; a task with
/// items: the phases of all its items, for AnySucceeded/AllFailed).
/// `bare(task, phase)` decides a bare `A`: Succeeded, Skipped or Daemoned,
/// plus Failed/Errored where A has `continueOn`.
pub fn depends(
    text: &str,
    phase_of: impl Fn(&str) -> Option<Vec<String>>,
    bare: impl Fn(&str, &str) -> bool,
) -> Result<bool, String> {
    eval(text, |w| {
        let (task, result) = split_depends_word(w);
        let phases = phase_of(task).ok_or_else(|| format!("{task:?} is not a task of this DAG"))?;
        let own = phases.first().map(String::as_str).unwrap_or("");
        let is = |p: &str| own == p;
        let b = match result {
            None => bare(task, own),
            Some("Succeeded") => is("Succeeded"),
            Some("Failed") => is("Failed"),
            Some("Errored") => is("Error"),
            Some("Skipped") => is("Skipped"),
            Some("Omitted") => is("Omitted"),
            Some("Daemoned") => false,
            Some("AnySucceeded") => phases.iter().skip(1).any(|p| p == "Succeeded"),
            Some("AllFailed") => {
                phases.len() > 1 && phases.iter().skip(1).all(|p| p == "Failed" || p == "Error")
            }
            Some(other) => return Err(format!("{other:?} is not a task result")),
        };
        Ok(Val::Bool(b))
    })?
    .truthy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_conditions() {
        assert!(when("heads == heads").unwrap());
        assert!(!when("tails == heads").unwrap());
        assert!(when("5 > 3 && !(a == b)").unwrap());
        assert!(when("'a b' == \"a b\"").unwrap());
        assert!(when("true").unwrap());
        assert!(when("(1 == 2").is_err());
        assert!(when("").is_err());
        assert!(when("banana").is_err());
    }

    #[test]
    fn depends_clauses() {
        let bare = |_: &str, p: &str| p == "Succeeded" || p == "Skipped";
        let phases = |t: &str| match t {
            "A" => Some(vec!["Succeeded".to_string()]),
            "B" => Some(vec!["Failed".to_string()]),
            "C" => Some(vec!["Skipped".to_string()]),
            "D" => Some(vec!["Omitted".to_string()]),
            _ => None,
        };
        assert!(depends("A", phases, bare).unwrap());
        assert!(
            depends("C", phases, bare).unwrap(),
            "a bare task accepts Skipped"
        );
        assert!(
            !depends("D", phases, bare).unwrap(),
            "a bare task refuses Omitted"
        );
        assert!(!depends("A && B", phases, bare).unwrap());
        assert!(depends("A && B.Failed", phases, bare).unwrap());
        assert!(depends("B.Succeeded || B.Failed", phases, bare).unwrap());
        assert!(depends("!B.Succeeded", phases, bare).unwrap());
        assert!(depends("E", phases, bare).is_err());
        assert_eq!(
            depends_tasks("A.Succeeded && (B || !C.Failed)").unwrap(),
            vec!["A", "B", "C"]
        );
        assert!(depends_tasks("A.Finished").is_err());
    }
}
