/**
 * The SQLite store's read cache (sqlite-store.ts): decoded entities kept per
 * kind, because the coordinator reads the same few many times per transition
 * and decoding costs more than the SQL.
 */

/** A map that forgets its least recently used entries beyond `capacity`. */
export class ReadCache<T> {
  private readonly entries = new Map<string, T>();
  constructor(private readonly capacity: number) {}

  get(key: string): T | undefined {
    const value = this.entries.get(key);
    if (value !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, value);
    }
    return value;
  }

  set(key: string, value: T): T {
    if (this.capacity === 0) return value;
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
    return value;
  }

  delete(key: string) {
    this.entries.delete(key);
  }

  clear() {
    this.entries.clear();
  }
}
