/**
 * The syntax of list filters: a subset of Google's AIP-160.
 *
 *   expression := term { ("AND" | implicit) term | "OR" term }   (AND binds tighter than OR)
 *   term       := ("NOT" | "-") term | "(" expression ")" | comparison
 *   comparison := path operator value | path ":" "*"
 *   path       := name { "." (name | string) }
 *   operator   := "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
 *   value      := string | number | duration | timestamp | name | "now" [("+" | "-") duration]
 *
 * Parsing knows nothing about fields or types (see compile.ts); every node
 * carries the 1-based column where it starts, so errors can point at it.
 */

export type Operator = "=" | "!=" | "<" | "<=" | ">" | ">=" | ":";

export type Literal =
  | { kind: "string"; text: string; quoted: boolean }
  | { kind: "number"; value: number; text: string }
  | { kind: "duration"; ms: number; text: string }
  | { kind: "timestamp"; ms: number; text: string }
  /** `now`, optionally shifted: now + offsetMs. */
  | { kind: "now"; offsetMs: number }
  | { kind: "any" };

export type FilterNode =
  | { kind: "and" | "or"; items: FilterNode[]; position: number }
  | { kind: "not"; item: FilterNode; position: number }
  | {
      kind: "compare";
      path: string[];
      pathText: string;
      operator: Operator;
      value: Literal;
      position: number;
      valuePosition: number;
    };

/** A filter that cannot be read; `position` is the 1-based column of the offending text. */
export class FilterError extends Error {
  constructor(
    message: string,
    readonly position: number,
  ) {
    super(message);
    this.name = "FilterError";
  }
}

type Token =
  | { kind: "word"; text: string; position: number }
  | { kind: "string"; text: string; position: number }
  | { kind: "number"; value: number; text: string; position: number }
  | { kind: "duration"; ms: number; text: string; position: number }
  | { kind: "timestamp"; ms: number; text: string; position: number }
  | { kind: "symbol"; text: string; position: number }
  | { kind: "end"; position: number };

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})/;
const NUMBER = /^\d+(\.\d+)?([eE][+-]?\d+)?/;
/** Names, and bare text values such as gpu-host-7 (a hyphen inside a word is part of it; a leading one is NOT). */
const WORD = /^[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*/;
const SYMBOLS = ["<=", ">=", "!=", "=", "<", ">", ":", "(", ")", ".", "-", "+", "*"];
/** Longest filter accepted: filters are typed by people, not generated megabytes. */
export const MAX_FILTER_LENGTH = 4_096;
const MAX_DEPTH = 32;

/** Parses a filter; the empty (or blank) filter is undefined, which matches everything. */
export function parseFilter(text: string): FilterNode | undefined {
  if (text.length > MAX_FILTER_LENGTH) throw new FilterError(`longer than ${MAX_FILTER_LENGTH} characters`, 1);
  const parser = new Parser(tokenize(text));
  if (parser.peek().kind === "end") return undefined;
  const node = parser.expression(0);
  const rest = parser.peek();
  if (rest.kind !== "end") throw new FilterError(`unexpected ${describe(rest)}`, rest.position);
  return node;
}

/** Parses an RFC 3339 timestamp as JavaScript does, refusing what Date would silently accept. */
export function parseTimestamp(text: string): number | undefined {
  const match = TIMESTAMP.exec(text);
  if (match === null || match[0].length !== text.length) return undefined;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? undefined : ms;
}

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const char = text[i]!;
    const position = i + 1;
    if (/\s/.test(char)) {
      i++;
      continue;
    }
    if (char === '"' || char === "'") {
      let value = "";
      let j = i + 1;
      for (;;) {
        if (j >= text.length) throw new FilterError("unterminated string", position);
        const c = text[j]!;
        if (c === char) break;
        if (c === "\\") {
          if (j + 1 >= text.length) throw new FilterError("unterminated string", position);
          value += text[j + 1];
          j += 2;
          continue;
        }
        value += c;
        j++;
      }
      tokens.push({ kind: "string", text: value, position });
      i = j + 1;
      continue;
    }
    const rest = text.slice(i);
    const timestamp = TIMESTAMP.exec(rest);
    if (timestamp !== null) {
      const ms = parseTimestamp(timestamp[0]);
      if (ms === undefined) throw new FilterError(`"${timestamp[0]}" is not a valid RFC 3339 timestamp`, position);
      tokens.push({ kind: "timestamp", ms, text: timestamp[0], position });
      i += timestamp[0].length;
      continue;
    }
    const number = NUMBER.exec(rest);
    if (number !== null) {
      const value = Number(number[0]);
      const unit = /^[a-z]+/.exec(rest.slice(number[0].length))?.[0];
      if (unit === undefined) {
        tokens.push({ kind: "number", value, text: number[0], position });
      } else {
        const scale = DURATION_UNITS[unit];
        if (scale === undefined) {
          throw new FilterError(`unknown duration unit "${unit}" (use ms, s, m, h or d)`, position + number[0].length);
        }
        tokens.push({ kind: "duration", ms: value * scale, text: number[0] + unit, position });
      }
      i += number[0].length + (unit?.length ?? 0);
      continue;
    }
    const word = WORD.exec(rest);
    if (word !== null) {
      tokens.push({ kind: "word", text: word[0], position });
      i += word[0].length;
      continue;
    }
    const symbol = SYMBOLS.find((s) => rest.startsWith(s));
    // The whole code point: half of a surrogate pair in a status message is not well-formed text, and grpc-js
    // throws while encoding it into the trailer (the call then never ends).
    if (symbol === undefined) throw new FilterError(`unexpected character "${String.fromCodePoint(rest.codePointAt(0)!)}"`, position);
    tokens.push({ kind: "symbol", text: symbol, position });
    i += symbol.length;
  }
  tokens.push({ kind: "end", position: text.length + 1 });
  return tokens;
}

const OPERATORS = new Set<string>(["=", "!=", "<", "<=", ">", ">=", ":"]);

class Parser {
  private index = 0;
  constructor(private readonly tokens: Token[]) {}

  peek(): Token {
    return this.tokens[this.index]!;
  }

  private next(): Token {
    return this.tokens[this.index++]!;
  }

  private isWord(token: Token, text: string) {
    return token.kind === "word" && token.text === text;
  }

  private isSymbol(token: Token, text: string) {
    return token.kind === "symbol" && token.text === text;
  }

  expression(depth: number): FilterNode {
    if (depth > MAX_DEPTH) throw new FilterError(`nested deeper than ${MAX_DEPTH} levels`, this.peek().position);
    const alternatives = [this.conjunction(depth)];
    while (this.isWord(this.peek(), "OR")) {
      this.next();
      alternatives.push(this.conjunction(depth));
    }
    return alternatives.length === 1 ? alternatives[0]! : { kind: "or", items: alternatives, position: alternatives[0]!.position };
  }

  /** Terms joined by AND, or simply written one after the other (AIP-160's implicit AND). */
  private conjunction(depth: number): FilterNode {
    const terms = [this.term(depth)];
    for (;;) {
      const token = this.peek();
      if (this.isWord(token, "AND")) {
        this.next();
      } else if (token.kind === "end" || this.isWord(token, "OR") || this.isSymbol(token, ")")) {
        break;
      }
      terms.push(this.term(depth));
    }
    return terms.length === 1 ? terms[0]! : { kind: "and", items: terms, position: terms[0]!.position };
  }

  private term(depth: number): FilterNode {
    const token = this.peek();
    if (this.isWord(token, "NOT") || this.isSymbol(token, "-")) {
      this.next();
      return { kind: "not", item: this.term(depth + 1), position: token.position };
    }
    if (this.isSymbol(token, "(")) {
      this.next();
      const inner = this.expression(depth + 1);
      const close = this.next();
      if (!this.isSymbol(close, ")")) throw new FilterError(`expected ")" but found ${describe(close)}`, close.position);
      return inner;
    }
    return this.comparison();
  }

  private comparison(): FilterNode {
    const start = this.peek();
    const path = this.path();
    const operatorToken = this.next();
    if (operatorToken.kind !== "symbol" || !OPERATORS.has(operatorToken.text)) {
      throw new FilterError(`expected an operator (= != < <= > >= :) after "${path.join(".")}" but found ${describe(operatorToken)}`, operatorToken.position);
    }
    const operator = operatorToken.text as Operator;
    const valuePosition = this.peek().position;
    const value = this.value(operator);
    return { kind: "compare", path, pathText: path.join("."), operator, value, position: start.position, valuePosition };
  }

  private path(): string[] {
    const first = this.next();
    if (first.kind !== "word" || ["AND", "OR", "NOT"].includes(first.text)) {
      throw new FilterError(`expected a field name but found ${describe(first)}`, first.position);
    }
    const path = [first.text];
    while (this.isSymbol(this.peek(), ".")) {
      this.next();
      const part = this.next();
      // Map keys that are not plain names are quoted: labels."gpu-type".
      if (part.kind !== "word" && part.kind !== "string") {
        throw new FilterError(`expected a field name after "." but found ${describe(part)}`, part.position);
      }
      path.push(part.text);
    }
    return path;
  }

  private value(operator: Operator): Literal {
    const token = this.next();
    switch (token.kind) {
      case "string":
        return { kind: "string", text: token.text, quoted: true };
      case "number":
        return { kind: "number", value: token.value, text: token.text };
      case "duration":
        return { kind: "duration", ms: token.ms, text: token.text };
      case "timestamp":
        return { kind: "timestamp", ms: token.ms, text: token.text };
      case "word":
        if (token.text === "now") return { kind: "now", offsetMs: this.nowOffset() };
        return { kind: "string", text: token.text, quoted: false };
      case "symbol":
        if (token.text === "*" && operator === ":") return { kind: "any" };
        if (token.text === "-") {
          const number = this.next();
          if (number.kind === "number") return { kind: "number", value: -number.value, text: `-${number.text}` };
          if (number.kind === "duration") return { kind: "duration", ms: -number.ms, text: `-${number.text}` };
          throw new FilterError(`expected a number after "-" but found ${describe(number)}`, number.position);
        }
        break;
      case "end":
        break;
    }
    throw new FilterError(`expected a value but found ${describe(token)}`, token.position);
  }

  /** `now - 5m`, `now + 1h`: the shift in ms, 0 for a bare `now`. */
  private nowOffset(): number {
    const sign = this.peek();
    if (!this.isSymbol(sign, "-") && !this.isSymbol(sign, "+")) return 0;
    this.next();
    const amount = this.next();
    if (amount.kind !== "duration") {
      throw new FilterError(`expected a duration such as 5m after "now ${sign.kind === "symbol" ? sign.text : ""}" but found ${describe(amount)}`, amount.position);
    }
    return this.isSymbol(sign, "-") ? -amount.ms : amount.ms;
  }
}

function describe(token: Token): string {
  switch (token.kind) {
    case "end":
      return "the end of the filter";
    case "string":
      return `"${token.text}"`;
    case "symbol":
    case "word":
      return `"${token.text}"`;
    default:
      return `"${token.text}"`;
  }
}
