/**
 * Actions that follow from transitions (pushing an assignment, waking a
 * waiter). They are collected while the transitions are applied and run only
 * after the store has made those transitions durable.
 */
export class Effects {
  private readonly actions: (() => void)[] = [];

  add(action: () => void) {
    this.actions.push(action);
  }

  run() {
    for (const action of this.actions) action();
    this.actions.length = 0;
  }
}
