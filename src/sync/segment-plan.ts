/**
 * The plan: the ordered, contiguous list of segments between the store's head and the sync
 * target. Pure bookkeeping over `Segment`s; the engine decides when to call what.
 *
 * Its rules follow the batch contract (DESIGN §3): a FetchCommits answer ends wherever the
 * server can certify, sometimes short of the segment (the rest becomes a segment of its own) and
 * sometimes past it (it fills the following segments, `absorbFollowing`). A batch is never cut.
 *
 * Threat: a peer that advertised heights it then could not back is banned or doubted, which can
 * lower the target; unverified segments beyond it are dropped (`dropBeyond`), so a liar cannot
 * make us hold plans (or bytes) for commits no honest peer has.
 */
import { Segment } from "./segment.js";

export class SegmentPlan {
  private list: Segment[] = [];

  get segments(): readonly Segment[] {
    return this.list;
  }

  get head(): Segment | undefined {
    return this.list[0];
  }

  includes(seg: Segment): boolean {
    return this.list.includes(seg);
  }

  /** Some segment has work started (the engine is not idle). */
  busy(): boolean {
    return this.list.some((s) => s.state.kind !== "idle");
  }

  /**
   * Drops unverified segments that start beyond `target` (the peers that advertised them were
   * banned or doubted since; answers still in flight are ignored). Returns them, to release.
   */
  dropBeyond(target: number): Segment[] {
    const dropped: Segment[] = [];
    for (let last = this.list.at(-1); last !== undefined; last = this.list.at(-1)) {
      if (!last.unverified || last.start <= target) break;
      dropped.push(last);
      this.list.pop();
    }
    return dropped;
  }

  /** Extends the plan to `target` with segments of `commitsPerSegment`, up to `maxSegments`. */
  extend(highestSynced: number, target: number, commitsPerSegment: number, maxSegments: number): void {
    let frontier = this.list.at(-1)?.end ?? highestSynced;
    while (this.list.length < maxSegments && frontier < target) {
      const end = Math.min(frontier + commitsPerSegment, target);
      this.list.push(new Segment(frontier + 1, end));
      frontier = end;
    }
  }

  /** Segment `seg` verified only through `last`: the rest of its range becomes a segment of its own. */
  splitAfter(seg: Segment, last: number): void {
    const i = this.list.indexOf(seg);
    this.list.splice(i + 1, 0, new Segment(last + 1, seg.end));
    seg.end = last;
  }

  /**
   * Segment `seg` verified through `last`, past its planned end (the server could certify nothing
   * earlier): it takes over the segments it covers. Those wholly covered go, whatever their state
   * (their answers in flight are ignored); one covered in part starts after `last`, and a batch
   * it already fetched loses the covered prefix when its turn to verify comes. Returns the
   * segments dropped, to release.
   */
  absorbFollowing(seg: Segment, last: number): Segment[] {
    const i = this.list.indexOf(seg);
    const dropped: Segment[] = [];
    while (i + 1 < this.list.length && this.list[i + 1]!.start <= last) {
      const next = this.list[i + 1]!;
      if (next.end > last) {
        next.start = last + 1;
        break;
      }
      dropped.push(next);
      this.list.splice(i + 1, 1);
    }
    seg.end = last;
    return dropped;
  }

  /**
   * The head when it is ready and next after the store, with the ready segments right behind it
   * up to `maxBytes` (the head always goes): one store write for several segments costs little
   * more than for one. A write never goes past the end of an epoch, so each is of one committee.
   */
  readyRun(highestSynced: number, maxBytes: number): Segment[] {
    const head = this.list[0];
    if (head?.state.kind !== "ready" || head.start !== highestSynced + 1) return [];
    const run = [head];
    let bytes = head.bytes;
    for (let i = 1; i < this.list.length; i++) {
      const seg = this.list[i]!;
      if (run.at(-1)!.batch?.nextCommittee !== undefined) break;
      if (seg.state.kind !== "ready" || bytes + seg.bytes > maxBytes) break;
      run.push(seg);
      bytes += seg.bytes;
    }
    return run;
  }

  /** The first `count` segments were applied. */
  removeApplied(count: number): Segment[] {
    return this.list.splice(0, count);
  }
}
