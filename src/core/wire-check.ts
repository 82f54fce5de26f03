/**
 * One reading of every byte (issue 10). Canonical bytes are the protocol, so another
 * implementation must read a message exactly as dagsync does. protobuf-es reads a known field
 * whatever wire type it arrives with: Block bytes `0d 01 10 10 0d 0d 10 02 20 18` decode as
 * epoch 13, round 2 here, while protobuf's reference implementations (C++, Python/upb, Go) keep
 * the same bytes as unknown fields of a block of epoch 0, round 0.
 *
 * `checkWire` walks the bytes against the message's descriptor, into every known message field,
 * before protobuf-es decodes them, and refuses every encoding that readers may read differently:
 * - a known field with a wire type its type does not allow (a repeated numeric scalar may be
 *   packed (LEN) or not: every reader accepts both);
 * - group wire types (3, 4: no dagsync message uses groups), wire types 6 and 7, field number 0,
 *   tags that overflow 32 bits;
 * - truncated varints, varints over 10 bytes or over 64 bits (Go refuses them, C++ drops the high
 *   bits), lengths past the end of the enclosing message (protobuf-es reads a length as 32 bits, so
 *   a 2^32 + 3 length would read as 3), packed payloads that are not whole elements;
 * - nesting deeper than 100 messages (protobuf-es's limit).
 * Well-formed unknown fields are accepted, as protobuf specifies: every reader skips them alike,
 * and since blocks and commits are hashed and signed as received, they cannot be altered in transit.
 */
import {
  type DescField,
  type DescMessage,
  fromBinary,
  type MessageShape,
  ScalarType,
} from "@bufbuild/protobuf";

import { DagsyncError } from "./errors.js";

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;
const WIRE_TYPE_NAMES = ["VARINT", "I64", "LEN", "SGROUP", "EGROUP", "I32", "6", "7"];
const MAX_DEPTH = 100;

/** Bytes that are not a well-formed encoding of the message they are read as. */
export class WireFormatError extends DagsyncError {
  override readonly name = "WireFormatError";
  constructor(message: string) {
    super("malformed", message);
  }
}

interface FieldPlan {
  readonly number: number;
  readonly name: string;
  /** The wire type of one element. */
  readonly wireType: number;
  /** A repeated numeric scalar: LEN (packed) is allowed too. */
  readonly packable: boolean;
  /** Bytes per packed element: 4 or 8, or 0 for varints. */
  readonly packedWidth: number;
  /** The payload of a LEN occurrence is this message (resolved lazily for recursive types). */
  readonly message: (() => MessagePlan) | undefined;
}

interface MessagePlan {
  readonly typeName: string;
  /** By field number; a small dense array since field numbers in dagsync messages are small. */
  readonly fields: readonly (FieldPlan | undefined)[];
  readonly more: ReadonlyMap<number, FieldPlan>;
}

const plans = new WeakMap<DescMessage, MessagePlan>();

function scalarWireType(scalar: ScalarType): number {
  switch (scalar) {
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return I64;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return I32;
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return LEN;
    default:
      return VARINT;
  }
}

function scalarPlan(number: number, name: string, scalar: ScalarType, repeated: boolean): FieldPlan {
  const wireType = scalarWireType(scalar);
  return {
    number,
    name,
    wireType,
    packable: repeated && wireType !== LEN,
    packedWidth: wireType === I64 ? 8 : wireType === I32 ? 4 : 0,
    message: undefined,
  };
}

function messagePlan(number: number, name: string, message: DescMessage): FieldPlan {
  return { number, name, wireType: LEN, packable: false, packedWidth: 0, message: () => planOf(message) };
}

function fieldPlan(field: DescField): FieldPlan {
  const { number, name } = field;
  switch (field.fieldKind) {
    case "scalar":
      return scalarPlan(number, name, field.scalar, false);
    case "enum":
      return scalarPlan(number, name, ScalarType.INT32, false);
    case "message":
      if (field.delimitedEncoding) throw new Error(`${field}: group encoding is not supported`);
      return messagePlan(number, name, field.message);
    case "list":
      if (field.listKind === "message") {
        if (field.delimitedEncoding) throw new Error(`${field}: group encoding is not supported`);
        return messagePlan(number, name, field.message);
      }
      return scalarPlan(number, name, field.listKind === "enum" ? ScalarType.INT32 : field.scalar, true);
    case "map": {
      // A map entry is a message { key = 1; value = 2; }.
      const value =
        field.mapKind === "message"
          ? messagePlan(2, "value", field.message)
          : scalarPlan(2, "value", field.mapKind === "enum" ? ScalarType.INT32 : field.scalar, false);
      const entry = makePlan(`${field.parent.typeName}.${name} entry`, [
        scalarPlan(1, "key", field.mapKey, false),
        value,
      ]);
      return { number, name, wireType: LEN, packable: false, packedWidth: 0, message: () => entry };
    }
  }
}

function makePlan(typeName: string, fields: readonly FieldPlan[]): MessagePlan {
  const dense: (FieldPlan | undefined)[] = [];
  const more = new Map<number, FieldPlan>();
  for (const f of fields) {
    if (f.number < 64) dense[f.number] = f;
    else more.set(f.number, f);
  }
  return { typeName, fields: dense, more };
}

function planOf(schema: DescMessage): MessagePlan {
  let plan = plans.get(schema);
  if (plan === undefined) {
    plan = makePlan(schema.typeName, schema.fields.map(fieldPlan));
    plans.set(schema, plan);
  }
  return plan;
}

function fail(plan: MessagePlan, what: string): never {
  throw new WireFormatError(`${plan.typeName}: ${what}`);
}

/**
 * Skips a varint at `pos`, returning the position after it: at most 10 bytes, at most 64 bits,
 * within `end`.
 */
function skipVarint(plan: MessagePlan, buf: Uint8Array, pos: number, end: number): number {
  const start = pos;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) fail(plan, `varint at byte ${start} is truncated`);
    const b = buf[pos++]!;
    if (b < 0x80) {
      if (i === 9 && b > 1) fail(plan, `varint at byte ${start} overflows 64 bits`);
      return pos;
    }
  }
  return fail(plan, `varint at byte ${start} is longer than 10 bytes`);
}

/** Checks `buf[pos, end)` as one message; throws WireFormatError naming the first defect. */
function walk(plan: MessagePlan, buf: Uint8Array, start: number, end: number, depth: number): void {
  if (depth >= MAX_DEPTH) fail(plan, `nested deeper than ${MAX_DEPTH} messages`);
  let pos = start;
  while (pos < end) {
    // Tag: a varint of at most 32 bits (5 bytes).
    const tagAt = pos;
    let tag = 0;
    for (let shift = 0; ; shift += 7) {
      if (pos >= end) fail(plan, `tag at byte ${tagAt} is truncated`);
      const b = buf[pos++]!;
      if (shift === 28 && b > 0x0f) fail(plan, `tag at byte ${tagAt} overflows 32 bits`);
      tag += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
    }
    const number = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (number === 0) fail(plan, `field number 0 at byte ${tagAt}`);
    const field = number < 64 ? plan.fields[number] : plan.more.get(number);
    if (field !== undefined && wireType !== field.wireType && !(field.packable && wireType === LEN))
      throw new WireFormatError(
        `field ${number} (${field.name}) of ${plan.typeName} has wire type ${wireType} (${WIRE_TYPE_NAMES[wireType]}), expected ${WIRE_TYPE_NAMES[field.wireType]}${field.packable ? " or LEN (packed)" : ""}`,
      );
    switch (wireType) {
      case VARINT:
        pos = skipVarint(plan, buf, pos, end);
        break;
      case I64:
      case I32: {
        const size = wireType === I64 ? 8 : 4;
        if (end - pos < size) fail(plan, `field ${number} at byte ${tagAt} is truncated`);
        pos += size;
        break;
      }
      case LEN: {
        const lengthAt = pos;
        let length = 0;
        pos = skipVarint(plan, buf, pos, end);
        for (let i = lengthAt, scale = 1; i < pos; i++, scale *= 128) length += (buf[i]! & 0x7f) * scale;
        if (length > end - pos)
          fail(
            plan,
            `field ${number} at byte ${tagAt}: length ${length} runs past the end (${end - pos} left)`,
          );
        const payloadEnd = pos + length;
        if (field?.message !== undefined) {
          const inner = field.message();
          try {
            walk(inner, buf, pos, payloadEnd, depth + 1);
          } catch (e) {
            if (e instanceof WireFormatError)
              throw new WireFormatError(
                `${e.message}, in field ${number} (${field.name}) of ${plan.typeName}`,
              );
            throw e;
          }
        } else if (field?.packable === true) {
          if (field.packedWidth > 0) {
            if (length % field.packedWidth !== 0)
              fail(plan, `packed field ${number} (${field.name}) holds ${length} bytes, not whole elements`);
          } else for (let p = pos; p < payloadEnd; ) p = skipVarint(plan, buf, p, payloadEnd);
        }
        pos = payloadEnd;
        break;
      }
      default:
        fail(
          plan,
          `field ${number} at byte ${tagAt} has wire type ${wireType} (${WIRE_TYPE_NAMES[wireType]}), which dagsync does not accept`,
        );
    }
  }
}

/** Throws WireFormatError unless `bytes` is a well-formed encoding of `schema` (see above). */
export function checkWire(schema: DescMessage, bytes: Uint8Array): void {
  walk(planOf(schema), bytes, 0, bytes.length, 0);
}

/** fromBinary for untrusted bytes: checkWire first, so that dagsync reads them as any reader would. */
export function decodeStrict<Desc extends DescMessage>(schema: Desc, bytes: Uint8Array): MessageShape<Desc> {
  checkWire(schema, bytes);
  return fromBinary(schema, bytes);
}
