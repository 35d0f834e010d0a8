import type { DescMessage, MessageShape } from "@bufbuild/protobuf";

/**
 * A message with every field of its schema as an own property, in the
 * schema's order: the fields protobuf-es leaves out while unset (sub-messages,
 * `optional` scalars) are present as `undefined`.
 *
 * Why: the domain moves records with spreads (`{ ...attempt, endTime }`), and
 * V8 copies an object fast only when the spread adds no property that the
 * source lacks; adding one (an attempt's first `endTime`, a rollout's first
 * `startTime`) takes a slow path that cost about 2 µs per transition, 20–40
 * times the copy itself (docs/benchmarks.md, "Full shapes"). Records made
 * here keep one shape through every transition. Protobuf-es treats an
 * `undefined` field as unset, so encoding, `equals` and JSON are unchanged.
 */
export function fullShape<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): MessageShape<Desc> {
  const shape = templateOf(schema);
  // Copying the template first fixes the object's layout; the loop then only overwrites (adding the properties one
  // by one to an empty object can leave it in V8's slow dictionary mode).
  const shaped: Record<string, unknown> = { ...shape.template };
  const source = message as Record<string, unknown>;
  for (const name of shape.names) shaped[name] = source[name];
  return shaped as MessageShape<Desc>;
}

interface Template {
  template: Record<string, unknown>;
  names: string[];
}

const templates = new Map<DescMessage, Template>();

function templateOf(schema: DescMessage): Template {
  let shape = templates.get(schema);
  if (shape === undefined) {
    const names = schema.members.map((member) => member.localName);
    const template: Record<string, unknown> = { $typeName: schema.typeName };
    for (const name of names) template[name] = undefined;
    // Built property by property, the template itself may be in dictionary mode; its spread copy is not.
    shape = { template: { ...template }, names };
    templates.set(schema, shape);
  }
  return shape;
}
