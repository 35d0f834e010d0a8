import { PAGE_SIZES, type PageSize } from "../table-query.js";

/** "1–50 of 312 runners", Previous / Next and the page size: the pager under the Runners and Rollouts tables. */
export function Pager(props: {
  pageIndex: number;
  pageSize: PageSize;
  shown: number;
  total: number;
  hasNext: boolean;
  onPrevious(): void;
  onNext(): void;
  onPageSize(size: PageSize): void;
  noun: string;
}) {
  const first = props.pageIndex * props.pageSize + 1;
  return (
    <div class="pager">
      <span class="muted">
        {props.shown === 0 ? 0 : first}–{first + props.shown - 1} of {props.total} {props.noun}
      </span>
      <button type="button" disabled={props.pageIndex === 0} onClick={props.onPrevious}>
        ‹ Previous
      </button>
      <button type="button" disabled={!props.hasNext} onClick={props.onNext}>
        Next ›
      </button>
      <label>
        Page size{" "}
        <select value={props.pageSize} onChange={(e) => props.onPageSize(Number((e.currentTarget as HTMLSelectElement).value) as PageSize)}>
          {PAGE_SIZES.map((size) => (
            <option key={size} value={size}>
              {size}
            </option>
          ))}
        </select>
      </label>
    </div>
  );
}
