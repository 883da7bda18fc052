// ChatTemplate: a lexer for the template's text and tags, a recursive-descent parser for the
// expressions, and a tree walker over nlohmann::json values (Jinja's Undefined as a flag).
#include "worker/tokenizer/chat_template.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/tokenizer/string_view_compat.h"

namespace quant::tokenizer {
namespace {

using json = nlohmann::json;

// Output bound: a chat of calibration size renders to kilobytes; a template looping over
// nested loops of a large record must not take the process's memory.
constexpr size_t kMaxOutputBytes = size_t{16} << 20;
// Nesting bound for expressions and blocks (real templates nest under 10): keeps the recursive
// parser's stack small on adversarial input.
constexpr int kMaxDepth = 64;

// Messages quote pieces of the template (which may hold newlines or escapes): control bytes
// become '?' so that every error stays one line on a terminal.
absl::Status LineError(int line, std::string_view what) {
  std::string s = absl::StrCat("line ", line, ": ", ToAbsl(what.substr(0, 200)));
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return absl::InvalidArgumentError(s);
}

struct Expr;
using ExprP = std::unique_ptr<Expr>;
struct Expr {
  enum class K {
    kLit,
    kName,
    kAttr,
    kItem,
    kSlice,
    kFilter,
    kTest,
    kNot,
    kNeg,
    kBin,
    kList,
    kNamespace
  };
  K k = K::kLit;
  int line = 0;
  json lit;
  std::string name;               // kName, kAttr, kFilter, kTest, kBin's operator
  bool negate = false;            // kTest: `is not`
  std::vector<ExprP> args;        // operands; kSlice: object, start, stop, step (null = absent)
  std::vector<std::string> keys;  // kNamespace's keyword names
};

}  // namespace

struct ChatTemplate::Node {
  enum class K { kText, kOutput, kIf, kFor, kSet };
  K k = K::kText;
  int line = 0;
  std::string text;
  ExprP expr;             // output, set value, for's iterable
  std::string var, attr;  // set target (attr non-empty: ns.attr), for variable
  std::vector<std::pair<ExprP, std::vector<std::unique_ptr<Node>>>> branches;  // if (null: else)
  std::vector<std::unique_ptr<Node>> body;                                     // for
};

namespace {

using Node = ChatTemplate::Node;
using NodeP = std::unique_ptr<Node>;

// ---- Lexing the template into text and tags. ----

struct Piece {
  enum class K { kText, kOutput, kStmt, kComment } k;
  std::string content;
  int line = 0;
  bool trim_left = false, trim_right = false;  // '-' just inside the delimiters
};

int CountLines(std::string_view s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

absl::StatusOr<std::vector<Piece>> Lex(std::string_view src) {
  std::vector<Piece> out;
  size_t pos = 0;
  int line = 1;
  while (pos < src.size()) {
    size_t open = src.find('{', pos);
    while (open != std::string_view::npos && open + 1 < src.size() && src[open + 1] != '{' &&
           src[open + 1] != '%' && src[open + 1] != '#') {
      open = src.find('{', open + 1);
    }
    if (open == std::string_view::npos || open + 1 >= src.size()) open = src.size();
    if (open > pos) {
      out.push_back({Piece::K::kText, std::string(src.substr(pos, open - pos)), line});
      line += CountLines(src.substr(pos, open - pos));
    }
    if (open >= src.size()) break;
    const char kind = src[open + 1];
    const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t i = open + 2;
    // Find the closing delimiter outside string literals (a '}}' inside quotes is text).
    char quote = 0;
    size_t end = std::string_view::npos;
    for (; i < src.size(); ++i) {
      const char c = src[i];
      if (kind != '#' && quote != 0) {
        if (c == '\\') {
          ++i;
        } else if (c == quote) {
          quote = 0;
        }
        continue;
      }
      if (kind != '#' && (c == '\'' || c == '"')) {
        quote = c;
        continue;
      }
      if (src.compare(i, 2, close) == 0) {
        end = i;
        break;
      }
    }
    if (end == std::string_view::npos) {
      return LineError(line, absl::StrCat("'", ToAbsl(src.substr(open, 2)),
                                          "' is never closed by '", close, "'"));
    }
    Piece p;
    p.k = kind == '{' ? Piece::K::kOutput : kind == '%' ? Piece::K::kStmt : Piece::K::kComment;
    p.line = line;
    std::string_view inner = src.substr(open + 2, end - open - 2);
    if (!inner.empty() && inner.front() == '-') {
      p.trim_left = true;
      inner.remove_prefix(1);
    } else if (!inner.empty() && inner.front() == '+') {
      inner.remove_prefix(1);  // {%+: lstrip_blocks off for this tag; close enough to ignore
    }
    if (!inner.empty() && inner.back() == '-') {
      p.trim_right = true;
      inner.remove_suffix(1);
    }
    p.content = std::string(inner);
    line += CountLines(src.substr(open, end + 2 - open));
    out.push_back(std::move(p));
    pos = end + 2;
  }
  // Whitespace: '-' strips all of it on that side; otherwise block tags and comments get
  // transformers' trim_blocks (one newline after) and lstrip_blocks (blanks before, on the line).
  // lstrip_blocks looks at the text as written (before a trim of the tag before it).
  std::vector<size_t> blanks_before(out.size(), std::string::npos);
  for (size_t j = 1; j < out.size(); ++j) {
    if (out[j].k == Piece::K::kText || out[j].k == Piece::K::kOutput) continue;
    if (out[j - 1].k != Piece::K::kText) continue;
    const std::string& t = out[j - 1].content;
    size_t k = t.size();
    while (k > 0 && (t[k - 1] == ' ' || t[k - 1] == '\t')) --k;
    if (k == 0 ? j - 1 == 0 : t[k - 1] == '\n') blanks_before[j] = t.size() - k;
  }
  for (size_t j = 0; j < out.size(); ++j) {
    Piece& p = out[j];
    if (p.k == Piece::K::kText) continue;
    const bool block = p.k != Piece::K::kOutput;
    if (j > 0 && out[j - 1].k == Piece::K::kText) {
      std::string& t = out[j - 1].content;
      if (p.trim_left) {
        while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
      } else if (block && blanks_before[j] != std::string::npos) {
        t.resize(t.size() - std::min(blanks_before[j], t.size()));
      }
    }
    if (j + 1 < out.size() && out[j + 1].k == Piece::K::kText) {
      std::string& t = out[j + 1].content;
      if (p.trim_right) {
        size_t k = 0;
        while (k < t.size() && std::isspace(static_cast<unsigned char>(t[k]))) ++k;
        t.erase(0, k);
      } else if (block && !t.empty() && t[0] == '\n') {
        t.erase(0, 1);
      }
    }
  }
  return out;
}

// ---- Expressions. ----

struct Tok {
  enum class K { kName, kString, kInt, kFloat, kOp, kEnd } k;
  std::string s;
  int line = 0;
};

absl::StatusOr<std::vector<Tok>> LexExpr(std::string_view s, int line) {
  std::vector<Tok> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '\n') ++line;
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Tok::K::kName, std::string(s.substr(i, j - i)), line});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      bool is_float = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j - i > 15) return LineError(line, "number literal too long");
      out.push_back(
          {is_float ? Tok::K::kFloat : Tok::K::kInt, std::string(s.substr(i, j - i)), line});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\n') ++line;
        if (s[j] != '\\' || j + 1 >= s.size()) {
          v += s[j];
          continue;
        }
        const char e = s[++j];
        switch (e) {
          case 'n':
            v += '\n';
            break;
          case 't':
            v += '\t';
            break;
          case 'r':
            v += '\r';
            break;
          case '\\':
          case '\'':
          case '"':
            v += e;
            break;
          default:
            v += '\\';
            v += e;  // Python keeps unknown escapes as written
        }
      }
      if (j >= s.size()) return LineError(line, "string literal is never closed");
      out.push_back({Tok::K::kString, std::move(v), line});
      i = j + 1;
    } else {
      static constexpr std::string_view kTwo[] = {"==", "!=", "<=", ">=", "//", "**"};
      std::string op(1, c);
      for (std::string_view two : kTwo) {
        if (s.substr(i, 2) == two) op = std::string(two);
      }
      if (op.size() == 1 &&
          std::string_view("+-*/%~|.,:()[]{}=<>").find(c) == std::string_view::npos) {
        return LineError(line, absl::StrCat("unexpected character '", std::string(1, c), "'"));
      }
      out.push_back({Tok::K::kOp, op, line});
      i += op.size();
    }
  }
  out.push_back({Tok::K::kEnd, "", line});
  return out;
}

class ExprParser {
 public:
  ExprParser(std::vector<Tok> toks) : t_(std::move(toks)) {}

  const Tok& Peek(size_t ahead = 0) const { return t_[std::min(p_ + ahead, t_.size() - 1)]; }
  bool IsOp(std::string_view op, size_t ahead = 0) const {
    return Peek(ahead).k == Tok::K::kOp && Peek(ahead).s == op;
  }
  bool IsName(std::string_view n, size_t ahead = 0) const {
    return Peek(ahead).k == Tok::K::kName && Peek(ahead).s == n;
  }
  bool AtEnd() const { return Peek().k == Tok::K::kEnd; }
  Tok Next() { return t_[std::min(p_++, t_.size() - 1)]; }
  absl::Status Expect(std::string_view op) {
    if (!IsOp(op))
      return LineError(Peek().line,
                       absl::StrCat("expected '", ToAbsl(op), "', got '", Peek().s, "'"));
    ++p_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().k != Tok::K::kName) {
      return LineError(Peek().line, absl::StrCat("expected a name, got '", Peek().s, "'"));
    }
    return Next().s;
  }

  absl::StatusOr<ExprP> Parse() { return Or(0); }

 private:
  ExprP Make(Expr::K k, int line) {
    auto e = std::make_unique<Expr>();
    e->k = k;
    e->line = line;
    return e;
  }
  absl::Status Deep(int depth) {
    if (depth > kMaxDepth) return LineError(Peek().line, "expression nested too deeply");
    return absl::OkStatus();
  }
  ExprP Bin(std::string op, ExprP a, ExprP b, int line) {
    ExprP e = Make(Expr::K::kBin, line);
    e->name = std::move(op);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  absl::StatusOr<ExprP> Or(int d) {
    RETURN_IF_ERROR(Deep(d));
    ASSIGN_OR_RETURN(ExprP a, And(d + 1));
    while (IsName("or")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprP b, And(d + 1));
      a = Bin("or", std::move(a), std::move(b), line);
    }
    if (IsName("if")) {
      return LineError(Peek().line, "conditional expression 'x if c else y' is not supported");
    }
    return a;
  }
  absl::StatusOr<ExprP> And(int d) {
    ASSIGN_OR_RETURN(ExprP a, Not(d));
    while (IsName("and")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprP b, Not(d));
      a = Bin("and", std::move(a), std::move(b), line);
    }
    return a;
  }
  absl::StatusOr<ExprP> Not(int d) {
    RETURN_IF_ERROR(Deep(d));
    if (IsName("not")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprP a, Not(d + 1));
      ExprP e = Make(Expr::K::kNot, line);
      e->args.push_back(std::move(a));
      return e;
    }
    return Compare(d);
  }
  absl::StatusOr<ExprP> Compare(int d) {
    ASSIGN_OR_RETURN(ExprP a, Concat(d));
    while (true) {
      const int line = Peek().line;
      std::string op;
      for (const char* o : {"==", "!=", "<", ">", "<=", ">="}) {
        if (IsOp(o)) op = o;
      }
      if (!op.empty()) {
        Next();
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "not in";
      } else if (IsName("is")) {
        Next();
        ExprP e = Make(Expr::K::kTest, line);
        if (IsName("not")) {
          Next();
          e->negate = true;
        }
        ASSIGN_OR_RETURN(e->name, ExpectName());
        static const char* kTests[] = {"defined", "undefined", "none",     "string", "number",
                                       "mapping", "sequence",  "iterable", "boolean"};
        bool known = false;
        for (const char* t : kTests) known = known || e->name == t;
        if (!known)
          return LineError(line, absl::StrCat("test 'is ", e->name, "' is not supported"));
        e->args.push_back(std::move(a));
        a = std::move(e);
        continue;
      } else {
        return a;
      }
      ASSIGN_OR_RETURN(ExprP b, Concat(d));
      a = Bin(op, std::move(a), std::move(b), line);
    }
  }
  absl::StatusOr<ExprP> Concat(int d) {
    ASSIGN_OR_RETURN(ExprP a, Add(d));
    while (IsOp("~")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprP b, Add(d));
      a = Bin("~", std::move(a), std::move(b), line);
    }
    return a;
  }
  absl::StatusOr<ExprP> Add(int d) {
    ASSIGN_OR_RETURN(ExprP a, Mul(d));
    while (IsOp("+") || IsOp("-")) {
      const Tok op = Next();
      ASSIGN_OR_RETURN(ExprP b, Mul(d));
      a = Bin(op.s, std::move(a), std::move(b), op.line);
    }
    return a;
  }
  absl::StatusOr<ExprP> Mul(int d) {
    ASSIGN_OR_RETURN(ExprP a, Unary(d));
    for (const char* o : {"*", "/", "%", "//", "**"}) {
      if (IsOp(o))
        return LineError(Peek().line, absl::StrCat("operator '", o, "' is not supported"));
    }
    return a;
  }
  absl::StatusOr<ExprP> Unary(int d) {
    RETURN_IF_ERROR(Deep(d));
    if (IsOp("-")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprP a, Unary(d + 1));
      ExprP e = Make(Expr::K::kNeg, line);
      e->args.push_back(std::move(a));
      return e;
    }
    return Postfix(d);
  }
  absl::StatusOr<ExprP> OptionalExpr(int d) {
    if (IsOp(":") || IsOp("]")) return ExprP();
    return Or(d + 1);
  }
  absl::StatusOr<ExprP> Postfix(int d) {
    ASSIGN_OR_RETURN(ExprP a, Primary(d));
    while (true) {
      const int line = Peek().line;
      if (IsOp(".")) {
        Next();
        ASSIGN_OR_RETURN(std::string attr, ExpectName());
        if (IsOp("(")) {
          return LineError(line, absl::StrCat("method call '.", attr, "()' is not supported"));
        }
        ExprP e = Make(Expr::K::kAttr, line);
        e->name = attr;
        e->args.push_back(std::move(a));
        a = std::move(e);
      } else if (IsOp("[")) {
        Next();
        ASSIGN_OR_RETURN(ExprP first, OptionalExpr(d));
        if (IsOp(":")) {
          ExprP e = Make(Expr::K::kSlice, line);
          e->args.push_back(std::move(a));
          e->args.push_back(std::move(first));
          Next();
          ASSIGN_OR_RETURN(ExprP stop, OptionalExpr(d));
          e->args.push_back(std::move(stop));
          ExprP step;
          if (IsOp(":")) {
            Next();
            ASSIGN_OR_RETURN(step, OptionalExpr(d));
          }
          e->args.push_back(std::move(step));
          a = std::move(e);
        } else {
          if (first == nullptr) return LineError(line, "empty subscript '[]'");
          ExprP e = Make(Expr::K::kItem, line);
          e->args.push_back(std::move(a));
          e->args.push_back(std::move(first));
          a = std::move(e);
        }
        RETURN_IF_ERROR(Expect("]"));
      } else if (IsOp("|")) {
        Next();
        ASSIGN_OR_RETURN(std::string filter, ExpectName());
        if (filter != "trim" && filter != "length" && filter != "string") {
          return LineError(line, absl::StrCat("filter '|", filter, "' is not supported"));
        }
        if (IsOp("(")) {
          return LineError(line, absl::StrCat("filter '|", filter, "' takes no arguments here"));
        }
        ExprP e = Make(Expr::K::kFilter, line);
        e->name = filter;
        e->args.push_back(std::move(a));
        a = std::move(e);
      } else if (IsOp("(")) {
        return LineError(line, "calling this value is not supported");
      } else {
        return a;
      }
    }
  }
  absl::StatusOr<ExprP> Primary(int d) {
    RETURN_IF_ERROR(Deep(d));
    const Tok t = Next();
    switch (t.k) {
      case Tok::K::kString: {
        ExprP e = Make(Expr::K::kLit, t.line);
        e->lit = t.s;
        // Adjacent literals concatenate, as in Python.
        while (Peek().k == Tok::K::kString) e->lit = e->lit.get<std::string>() + Next().s;
        return e;
      }
      case Tok::K::kInt: {
        ExprP e = Make(Expr::K::kLit, t.line);
        e->lit = std::stoll(t.s);
        return e;
      }
      case Tok::K::kFloat: {
        ExprP e = Make(Expr::K::kLit, t.line);
        e->lit = std::stod(t.s);
        return e;
      }
      case Tok::K::kName: {
        if (t.s == "true" || t.s == "True" || t.s == "false" || t.s == "False") {
          ExprP e = Make(Expr::K::kLit, t.line);
          e->lit = t.s == "true" || t.s == "True";
          return e;
        }
        if (t.s == "none" || t.s == "None") return Make(Expr::K::kLit, t.line);  // lit null
        if (IsOp("(")) {
          if (t.s != "namespace") {
            return LineError(t.line, absl::StrCat("function '", t.s, "()' is not supported"));
          }
          Next();
          ExprP e = Make(Expr::K::kNamespace, t.line);
          while (!IsOp(")")) {
            ASSIGN_OR_RETURN(std::string key, ExpectName());
            RETURN_IF_ERROR(Expect("="));
            ASSIGN_OR_RETURN(ExprP v, Or(d + 1));
            e->keys.push_back(std::move(key));
            e->args.push_back(std::move(v));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(Expect(")"));
          return e;
        }
        ExprP e = Make(Expr::K::kName, t.line);
        e->name = t.s;
        return e;
      }
      case Tok::K::kOp:
        if (t.s == "(") {
          ASSIGN_OR_RETURN(ExprP e, Or(d + 1));
          RETURN_IF_ERROR(Expect(")"));
          return e;
        }
        if (t.s == "[") {
          ExprP e = Make(Expr::K::kList, t.line);
          while (!IsOp("]")) {
            ASSIGN_OR_RETURN(ExprP v, Or(d + 1));
            e->args.push_back(std::move(v));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(Expect("]"));
          return e;
        }
        if (t.s == "{") return LineError(t.line, "dict literals are not supported");
        return LineError(t.line, absl::StrCat("unexpected '", t.s, "'"));
      case Tok::K::kEnd:
        return LineError(t.line, "expression expected");
    }
    return LineError(t.line, "expression expected");
  }

  std::vector<Tok> t_;
  size_t p_ = 0;
};

absl::StatusOr<ExprP> ParseWholeExpr(ExprParser& p) {
  ASSIGN_OR_RETURN(ExprP e, p.Parse());
  if (!p.AtEnd()) return LineError(p.Peek().line, absl::StrCat("unexpected '", p.Peek().s, "'"));
  return e;
}

// ---- Statements. ----

class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Piece> pieces) : pieces_(std::move(pieces)) {}

  // Parses nodes until a statement whose keyword is in `ends` (returned in *end, its parser
  // positioned after the keyword) or the end of the template (*end empty).
  absl::Status Body(const std::vector<std::string>& ends, int depth, std::vector<NodeP>* out,
                    std::string* end, std::unique_ptr<ExprParser>* rest) {
    if (depth > kMaxDepth) return LineError(Line(), "blocks nested too deeply");
    end->clear();
    while (i_ < pieces_.size()) {
      const Piece& p = pieces_[i_++];
      if (p.k == Piece::K::kComment) continue;
      if (p.k == Piece::K::kText) {
        if (p.content.empty()) continue;
        auto n = std::make_unique<Node>();
        n->k = Node::K::kText;
        n->line = p.line;
        n->text = p.content;
        out->push_back(std::move(n));
        continue;
      }
      ASSIGN_OR_RETURN(std::vector<Tok> toks, LexExpr(p.content, p.line));
      auto ep = std::make_unique<ExprParser>(std::move(toks));
      if (p.k == Piece::K::kOutput) {
        auto n = std::make_unique<Node>();
        n->k = Node::K::kOutput;
        n->line = p.line;
        ASSIGN_OR_RETURN(n->expr, ParseWholeExpr(*ep));
        out->push_back(std::move(n));
        continue;
      }
      ASSIGN_OR_RETURN(std::string keyword, ep->ExpectName());
      for (const std::string& e : ends) {
        if (keyword == e) {
          *end = keyword;
          *rest = std::move(ep);
          return absl::OkStatus();
        }
      }
      if (keyword == "if") {
        ASSIGN_OR_RETURN(NodeP n, If(*ep, p.line, depth));
        out->push_back(std::move(n));
      } else if (keyword == "for") {
        ASSIGN_OR_RETURN(NodeP n, For(*ep, p.line, depth));
        out->push_back(std::move(n));
      } else if (keyword == "set") {
        ASSIGN_OR_RETURN(NodeP n, Set(*ep, p.line));
        out->push_back(std::move(n));
      } else if (keyword == "endif" || keyword == "endfor" || keyword == "elif" ||
                 keyword == "else") {
        return LineError(p.line, absl::StrCat("'", keyword, "' without its opening tag"));
      } else {
        return LineError(p.line, absl::StrCat("tag '{% ", keyword, " %}' is not supported"));
      }
    }
    if (!ends.empty()) {
      return LineError(Line(), absl::StrCat("template ends before '{% ", ends.back(), " %}'"));
    }
    return absl::OkStatus();
  }

 private:
  int Line() const { return pieces_.empty() ? 1 : pieces_[std::min(i_, pieces_.size()) - 1].line; }

  absl::StatusOr<NodeP> If(ExprParser& ep, int line, int depth) {
    auto n = std::make_unique<Node>();
    n->k = Node::K::kIf;
    n->line = line;
    ASSIGN_OR_RETURN(ExprP cond, ParseWholeExpr(ep));
    while (true) {
      std::vector<NodeP> body;
      std::string end;
      std::unique_ptr<ExprParser> rest;
      RETURN_IF_ERROR(Body({"elif", "else", "endif"}, depth + 1, &body, &end, &rest));
      n->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "endif") {
        if (!rest->AtEnd()) return LineError(Line(), "unexpected text after 'endif'");
        return n;
      }
      if (end == "elif") {
        ASSIGN_OR_RETURN(cond, ParseWholeExpr(*rest));
        continue;
      }
      if (!rest->AtEnd()) return LineError(Line(), "unexpected text after 'else'");
      std::vector<NodeP> else_body;
      RETURN_IF_ERROR(Body({"endif"}, depth + 1, &else_body, &end, &rest));
      n->branches.emplace_back(nullptr, std::move(else_body));
      return n;
    }
  }

  absl::StatusOr<NodeP> For(ExprParser& ep, int line, int depth) {
    auto n = std::make_unique<Node>();
    n->k = Node::K::kFor;
    n->line = line;
    ASSIGN_OR_RETURN(n->var, ep.ExpectName());
    if (ep.IsOp(",")) return LineError(line, "for-loops over several names are not supported");
    if (!ep.IsName("in")) return LineError(line, "expected 'in' in the for-loop");
    ep.Next();
    ASSIGN_OR_RETURN(n->expr, ep.Parse());
    if (ep.IsName("if"))
      return LineError(line, "for-loop filters ('for x in y if c') are not supported");
    if (ep.IsName("recursive")) return LineError(line, "recursive for-loops are not supported");
    if (!ep.AtEnd()) return LineError(line, absl::StrCat("unexpected '", ep.Peek().s, "'"));
    std::string end;
    std::unique_ptr<ExprParser> rest;
    RETURN_IF_ERROR(Body({"else", "endfor"}, depth + 1, &n->body, &end, &rest));
    if (end == "else") return LineError(Line(), "'{% else %}' in a for-loop is not supported");
    return n;
  }

  absl::StatusOr<NodeP> Set(ExprParser& ep, int line) {
    auto n = std::make_unique<Node>();
    n->k = Node::K::kSet;
    n->line = line;
    ASSIGN_OR_RETURN(n->var, ep.ExpectName());
    if (ep.IsOp(".")) {
      ep.Next();
      ASSIGN_OR_RETURN(n->attr, ep.ExpectName());
    }
    if (!ep.IsOp("=")) return LineError(line, "block '{% set %}...{% endset %}' is not supported");
    ep.Next();
    ASSIGN_OR_RETURN(n->expr, ParseWholeExpr(ep));
    return n;
  }

  std::vector<Piece> pieces_;
  size_t i_ = 0;
};

// ---- Rendering. ----

struct Value {
  json v;
  bool undefined = false;
};

bool Truthy(const Value& x) {
  if (x.undefined) return false;
  const json& v = x.v;
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer()) return v.get<int64_t>() != 0;
  if (v.is_number()) return v.get<double>() != 0;
  if (v.is_string() || v.is_array() || v.is_object()) return !v.empty();
  return true;
}

// How Jinja (Python's str) prints a value.
std::string ToText(const Value& x) {
  if (x.undefined) return "";
  const json& v = x.v;
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  return v.dump();
}

class Renderer {
 public:
  explicit Renderer(const json& context) {
    scopes_.emplace_back();
    if (context.is_object()) {
      for (const auto& [k, v] : context.items()) scopes_.back()[k] = v;
    }
  }

  absl::Status Run(const std::vector<NodeP>& nodes) {
    for (const NodeP& n : nodes) RETURN_IF_ERROR(Exec(*n));
    return absl::OkStatus();
  }
  std::string& out() { return out_; }

 private:
  absl::Status Emit(std::string_view s, int line) {
    if (out_.size() + s.size() > kMaxOutputBytes) {
      return LineError(line, absl::StrCat("the rendered text passes ", kMaxOutputBytes, " bytes"));
    }
    out_.append(s);
    return absl::OkStatus();
  }

  json* Find(const std::string& name) {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return &f->second;
    }
    return nullptr;
  }

  absl::Status Exec(const Node& n) {
    switch (n.k) {
      case Node::K::kText:
        return Emit(n.text, n.line);
      case Node::K::kOutput: {
        ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        return Emit(ToText(v), n.line);
      }
      case Node::K::kIf:
        for (const auto& [cond, body] : n.branches) {
          bool take = cond == nullptr;
          if (!take) {
            ASSIGN_OR_RETURN(Value c, Eval(*cond));
            take = Truthy(c);
          }
          if (take) return Run(body);
        }
        return absl::OkStatus();
      case Node::K::kSet: {
        ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        if (n.attr.empty()) {
          scopes_.back()[n.var] = v.undefined ? json() : v.v;
          return absl::OkStatus();
        }
        json* target = Find(n.var);
        if (target == nullptr || !target->is_object()) {
          return LineError(n.line, absl::StrCat("'set ", n.var, ".", n.attr,
                                                "' needs a namespace() named ", n.var));
        }
        (*target)[n.attr] = v.undefined ? json() : v.v;
        return absl::OkStatus();
      }
      case Node::K::kFor: {
        ASSIGN_OR_RETURN(Value seq, Eval(*n.expr));
        json items = json::array();
        if (seq.v.is_array()) {
          items = seq.v;
        } else if (seq.v.is_object()) {
          for (const auto& [k, v] : seq.v.items()) items.push_back(k);
        } else if (seq.v.is_string()) {
          for (char c : seq.v.get<std::string>()) items.push_back(std::string(1, c));
        } else if (!seq.undefined) {
          return LineError(n.line, "the for-loop's value is not a list");
        }
        const int64_t length = static_cast<int64_t>(items.size());
        for (int64_t i = 0; i < length; ++i) {
          // A loop's body has its own scope: a plain `set` inside does not outlive the
          // iteration (Jinja's rule, the reason templates use namespace()).
          scopes_.emplace_back();
          scopes_.back()[n.var] = items[i];
          scopes_.back()["loop"] = json{{"index", i + 1},
                                        {"index0", i},
                                        {"first", i == 0},
                                        {"last", i + 1 == length},
                                        {"length", length},
                                        {"revindex", length - i},
                                        {"revindex0", length - i - 1}};
          absl::Status s = Run(n.body);
          scopes_.pop_back();
          RETURN_IF_ERROR(s);
        }
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Value> Defined(const Value& v, const Expr& e) {
    if (v.undefined) return LineError(e.line, "a value is undefined");
    return v;
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    switch (e.k) {
      case Expr::K::kLit:
        return Value{e.lit};
      case Expr::K::kName: {
        const json* v = Find(e.name);
        if (v == nullptr) return Value{json(), true};
        return Value{*v};
      }
      case Expr::K::kList: {
        Value out{json::array()};
        for (const ExprP& a : e.args) {
          ASSIGN_OR_RETURN(Value v, Eval(*a));
          out.v.push_back(v.v);
        }
        return out;
      }
      case Expr::K::kNamespace: {
        Value out{json::object()};
        for (size_t i = 0; i < e.args.size(); ++i) {
          ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
          out.v[e.keys[i]] = v.v;
        }
        return out;
      }
      case Expr::K::kAttr:
      case Expr::K::kItem: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        if (obj.undefined) {
          return LineError(e.line, e.args[0]->k == Expr::K::kName
                                       ? absl::StrCat("'", e.args[0]->name, "' is undefined")
                                       : "a value is undefined");
        }
        Value key{e.name};
        if (e.k == Expr::K::kItem) {
          ASSIGN_OR_RETURN(key, Eval(*e.args[1]));
        }
        if (obj.v.is_object() && key.v.is_string()) {
          auto it = obj.v.find(key.v.get<std::string>());
          if (it == obj.v.end()) return Value{json(), true};
          return Value{*it};
        }
        if ((obj.v.is_array() || obj.v.is_string()) && key.v.is_number_integer()) {
          const int64_t size =
              obj.v.is_array() ? static_cast<int64_t>(obj.v.size())
                               : static_cast<int64_t>(obj.v.get_ref<const std::string&>().size());
          int64_t i = key.v.get<int64_t>();
          if (i < 0) i += size;
          if (i < 0 || i >= size) return Value{json(), true};
          if (obj.v.is_array()) return Value{obj.v[static_cast<size_t>(i)]};
          return Value{std::string(1, obj.v.get_ref<const std::string&>()[static_cast<size_t>(i)])};
        }
        return Value{json(), true};
      }
      case Expr::K::kSlice: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(obj, Defined(obj, e));
        if (!obj.v.is_array() && !obj.v.is_string()) {
          return LineError(e.line, "only lists and strings can be sliced");
        }
        int64_t bounds[3] = {0, 0, 1};
        bool given[3] = {false, false, false};
        for (int k = 0; k < 3; ++k) {
          if (e.args[k + 1] == nullptr) continue;
          ASSIGN_OR_RETURN(Value b, Eval(*e.args[k + 1]));
          if (!b.v.is_number_integer()) return LineError(e.line, "slice bounds must be integers");
          bounds[k] = b.v.get<int64_t>();
          given[k] = true;
        }
        const int64_t step = bounds[2];
        if (step == 0) return LineError(e.line, "slice step cannot be zero");
        const bool is_str = obj.v.is_string();
        const int64_t size = is_str
                                 ? static_cast<int64_t>(obj.v.get_ref<const std::string&>().size())
                                 : static_cast<int64_t>(obj.v.size());
        // Python's slice.indices.
        auto clamp = [&](int64_t x, bool have, int64_t dflt) {
          if (!have) return dflt;
          if (x < 0) x += size;
          if (step > 0) return std::clamp<int64_t>(x, 0, size);
          return std::clamp<int64_t>(x, -1, size - 1);
        };
        const int64_t start = clamp(bounds[0], given[0], step > 0 ? 0 : size - 1);
        const int64_t stop = clamp(bounds[1], given[1], step > 0 ? size : -1);
        Value out{is_str ? json(std::string()) : json::array()};
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
          if (is_str) {
            out.v.get_ref<std::string&>() +=
                obj.v.get_ref<const std::string&>()[static_cast<size_t>(i)];
          } else {
            out.v.push_back(obj.v[static_cast<size_t>(i)]);
          }
        }
        return out;
      }
      case Expr::K::kFilter: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        if (e.name == "string") return Value{ToText(v)};
        if (e.name == "trim") {
          std::string s = ToText(v);
          size_t a = 0, b = s.size();
          while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
          while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
          return Value{s.substr(a, b - a)};
        }
        // length
        if (v.undefined) return Value{0};
        if (v.v.is_string()) return Value{v.v.get_ref<const std::string&>().size()};
        if (v.v.is_array() || v.v.is_object()) return Value{v.v.size()};
        return LineError(e.line, "'|length' of a value that has no length");
      }
      case Expr::K::kTest: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        bool r = false;
        if (e.name == "defined")
          r = !v.undefined;
        else if (e.name == "undefined")
          r = v.undefined;
        else if (e.name == "none")
          r = !v.undefined && v.v.is_null();
        else if (e.name == "string")
          r = !v.undefined && v.v.is_string();
        else if (e.name == "number")
          r = !v.undefined && v.v.is_number();
        else if (e.name == "boolean")
          r = !v.undefined && v.v.is_boolean();
        else if (e.name == "mapping")
          r = !v.undefined && v.v.is_object();
        else if (e.name == "sequence" || e.name == "iterable") {
          r = !v.undefined && (v.v.is_array() || v.v.is_string() || v.v.is_object());
        }
        return Value{r != e.negate};
      }
      case Expr::K::kNot: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        return Value{!Truthy(v)};
      }
      case Expr::K::kNeg: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        if (v.v.is_number_integer()) return Value{-v.v.get<int64_t>()};
        if (v.v.is_number()) return Value{-v.v.get<double>()};
        return LineError(e.line, "'-' of a value that is not a number");
      }
      case Expr::K::kBin:
        return Binary(e);
    }
    return LineError(e.line, "unknown expression");
  }

  absl::StatusOr<Value> Binary(const Expr& e) {
    ASSIGN_OR_RETURN(Value a, Eval(*e.args[0]));
    const std::string& op = e.name;
    // and/or short-circuit and return an operand, as in Python.
    if (op == "and") {
      if (!Truthy(a)) return a;
      return Eval(*e.args[1]);
    }
    if (op == "or") {
      if (Truthy(a)) return a;
      return Eval(*e.args[1]);
    }
    ASSIGN_OR_RETURN(Value b, Eval(*e.args[1]));
    if (op == "~") return Value{ToText(a) + ToText(b)};
    if (op == "==" || op == "!=") {
      const bool eq = a.undefined == b.undefined && (a.undefined || a.v == b.v);
      return Value{eq == (op == "==")};
    }
    if (op == "in" || op == "not in") {
      ASSIGN_OR_RETURN(b, Defined(b, e));
      bool found = false;
      if (b.v.is_string()) {
        if (!a.v.is_string()) return LineError(e.line, "'in' a string needs a string");
        found = b.v.get_ref<const std::string&>().find(a.v.get_ref<const std::string&>()) !=
                std::string::npos;
      } else if (b.v.is_array()) {
        for (const json& x : b.v) found = found || (!a.undefined && x == a.v);
      } else if (b.v.is_object()) {
        found = a.v.is_string() && b.v.contains(a.v.get<std::string>());
      } else {
        return LineError(e.line, "'in' needs a string, list or mapping on its right");
      }
      return Value{found == (op == "in")};
    }
    if (a.undefined || b.undefined) {
      return LineError(e.line, absl::StrCat("'", op, "' of an undefined value"));
    }
    if (op == "+") {
      if (a.v.is_string() && b.v.is_string()) {
        return Value{a.v.get<std::string>() + b.v.get<std::string>()};
      }
      if (a.v.is_array() && b.v.is_array()) {
        json r = a.v;
        for (const json& x : b.v) r.push_back(x);
        return Value{r};
      }
      if (a.v.is_number_integer() && b.v.is_number_integer()) {
        return Value{a.v.get<int64_t>() + b.v.get<int64_t>()};
      }
      if (a.v.is_number() && b.v.is_number()) return Value{a.v.get<double>() + b.v.get<double>()};
      return LineError(e.line, absl::StrCat("'+' of a ", a.v.type_name(), " and a ",
                                            b.v.type_name(), " (use '~' to join as text)"));
    }
    if (op == "-") {
      if (a.v.is_number_integer() && b.v.is_number_integer()) {
        return Value{a.v.get<int64_t>() - b.v.get<int64_t>()};
      }
      if (a.v.is_number() && b.v.is_number()) return Value{a.v.get<double>() - b.v.get<double>()};
      return LineError(e.line, "'-' of values that are not numbers");
    }
    // < > <= >=: numbers or strings.
    int cmp = 0;
    if (a.v.is_number() && b.v.is_number()) {
      const double x = a.v.get<double>(), y = b.v.get<double>();
      cmp = x < y ? -1 : x > y ? 1 : 0;
    } else if (a.v.is_string() && b.v.is_string()) {
      cmp = a.v.get<std::string>().compare(b.v.get<std::string>());
    } else {
      return LineError(
          e.line, absl::StrCat("'", op, "' of a ", a.v.type_name(), " and a ", b.v.type_name()));
    }
    if (op == "<") return Value{cmp < 0};
    if (op == ">") return Value{cmp > 0};
    if (op == "<=") return Value{cmp <= 0};
    return Value{cmp >= 0};
  }

  std::vector<std::map<std::string, json>> scopes_;
  std::string out_;
};

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source) {
  ASSIGN_OR_RETURN(std::vector<Piece> pieces, Lex(source));
  TemplateParser parser(std::move(pieces));
  auto root = std::make_shared<Node>();
  root->k = Node::K::kFor;  // only its body is used: the top-level node list
  std::string end;
  std::unique_ptr<ExprParser> rest;
  RETURN_IF_ERROR(parser.Body({}, 0, &root->body, &end, &rest));
  ChatTemplate t;
  t.root_ = std::move(root);
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context) const {
  QUANT_CHECK(root_ != nullptr);
  Renderer r(context);
  RETURN_IF_ERROR(r.Run(root_->body));
  return std::move(r.out());
}

}  // namespace quant::tokenizer
