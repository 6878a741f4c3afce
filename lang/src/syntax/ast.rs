//! The syntax tree: what the file says, with a span on every node, before any name is resolved
//! or any type checked. The checker consumes it and returns a `CheckedPipeline`; nothing
//! downstream of the checker sees these types.

use crate::source::Span;

/// A parsed file: its items in source order, every comment (the formatter puts them back),
/// and the names of declarations that could not be parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
    pub comments: Vec<Comment>,
    /// Names declared by the declarations left out for syntax errors, so that references to
    /// them are not reported as unknown on top of the syntax error.
    pub broken: Vec<Ident>,
}

/// A `# ...` comment; `text` includes the `#`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `pipeline NAME`
    Pipeline { name: Ident, span: Span },
    /// `use "path.mg"`
    Use { path: String, path_span: Span, span: Span },
    /// `NAME = expr` at the top level: a constant other items refer to (`seed = 7`).
    Binding(Binding),
    /// `dataset NAME = KIND { ... }` or `stage NAME = KIND(args) { ... }`
    Decl(Decl),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Pipeline { span, .. } | Item::Use { span, .. } => *span,
            Item::Binding(b) => b.span,
            Item::Decl(d) => d.span,
        }
    }
}

/// Whether a declaration was written with `dataset` or `stage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclKeyword {
    Dataset,
    Stage,
}

impl DeclKeyword {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclKeyword::Dataset => "dataset",
            DeclKeyword::Stage => "stage",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub keyword: DeclKeyword,
    pub name: Ident,
    /// The stage kind: `phantom`, `compress`, `shell`, ...
    pub kind: Ident,
    /// The parenthesised arguments, when written (`compress(brain)`).
    pub args: Option<Args>,
    /// The `{ ... }` block, when written.
    pub block: Option<Block>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    pub args: Vec<Arg>,
    pub span: Span,
}

/// `expr` or `name: expr`.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub items: Vec<BlockItem>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum BlockItem {
    /// `name = expr`
    Assign(Binding),
    /// `sweep name in [a, b, ...]`
    Sweep(Sweep),
    /// `expect lhs op rhs`
    Expect(Expect),
}

impl BlockItem {
    pub fn span(&self) -> Span {
        match self {
            BlockItem::Assign(b) => b.span,
            BlockItem::Sweep(s) => s.span,
            BlockItem::Expect(e) => e.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub param: Ident,
    pub values: Vec<Expr>,
    /// The span of the `[ ... ]` list.
    pub list_span: Span,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    pub lhs: Expr,
    pub op: CmpOp,
    pub op_span: Span,
    pub rhs: Expr,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CmpOp {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    /// Whether `lhs op rhs` holds.
    pub fn holds(self, lhs: f64, rhs: f64) -> bool {
        match self {
            CmpOp::Lt => lhs < rhs,
            CmpOp::Le => lhs <= rhs,
            CmpOp::Gt => lhs > rhs,
            CmpOp::Ge => lhs >= rhs,
            CmpOp::Eq => lhs == rhs,
            CmpOp::Ne => lhs != rhs,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    /// Binding strength: `*` and `/` bind tighter than `+` and `-`.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// An integer; `raw` is the text as written (the formatter keeps `1_000`).
    Int {
        value: i64,
        raw: String,
    },
    /// A float; `raw` is the text as written (the formatter keeps `2e-4`).
    Float {
        value: f64,
        raw: String,
    },
    Bool(bool),
    /// `none`: an optional parameter switched off.
    None,
    /// A string with escapes resolved; `raw` is the body as written.
    Str {
        value: String,
        raw: String,
    },
    /// `name` or `a.b.c`: an enum value, a top-level constant, or a stage and its fields.
    Path(Vec<Ident>),
    List(Vec<Expr>),
    Record(Vec<Field>),
    /// `f(a, k: v)`: a constructor such as `vqvae(dims: 2)` or `rflow(sampling: uniform)`.
    Call {
        func: Ident,
        args: Args,
    },
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `( expr )`
    Group(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: Ident,
    pub value: Expr,
}
