/** A WHERE clause built from parts, with `$` placeholders numbered as they are added. */
export class Where {
  private readonly parts: string[] = [];
  readonly params: unknown[] = [];

  add(condition: string, value: unknown) {
    this.params.push(value);
    this.parts.push(condition.replace("$", `$${this.params.length}`));
  }

  in(column: string, values: readonly number[]) {
    if (values.length > 0) this.add(`${column} = ANY($)`, values);
  }

  equal(column: string, value: string) {
    if (value !== "") this.add(`${column} = $`, value);
  }

  /** Case-sensitive substring, as String.prototype.includes. */
  contains(column: string, value: string) {
    if (value !== "") this.add(`strpos(${column}, $) > 0`, value);
  }

  sql() {
    return this.parts.length === 0 ? "" : ` WHERE ${this.parts.join(" AND ")}`;
  }
}
