// The message box: Enter runs the line (a message or a /command), Up/Down recall
// earlier lines, Tab completes a member's name, as in the terminal client.

export class Composer {
  constructor(form, input, app) {
    this.input = input;
    this.app = app;
    this.history = []; // lines sent, for Up/Down
    this.historyAt = 0;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submitLine();
    });
    input.addEventListener("keydown", (e) => this.inputKey(e));
  }

  submitLine() {
    const input = this.input;
    const line = input.value;
    if (!this.app.runCommand(line)) return;
    if (line.trim()) this.history.push(line);
    this.history.splice(0, this.history.length - 100);
    this.historyAt = this.history.length;
    input.value = "";
  }

  /** Up/Down recall earlier lines; Tab completes a member's name, as in the terminal. */
  inputKey(e) {
    const input = this.input;
    if ((e.key === "ArrowUp" || e.key === "ArrowDown") && !e.shiftKey) {
      const step = e.key === "ArrowUp" ? -1 : 1;
      const at = Math.min(Math.max(this.historyAt + step, 0), this.history.length);
      if (at === this.historyAt) return;
      e.preventDefault();
      this.historyAt = at;
      input.value = this.history[at] ?? "";
    } else if (e.key === "Tab" && input.value) {
      const before = input.value.slice(0, input.selectionStart);
      const word = before.match(/[A-Za-z0-9_-]+$/)?.[0];
      if (!word) return;
      const names = this.app.model.currentBuffer.sortedMembers().filter((n) => n.toLowerCase().startsWith(word.toLowerCase()));
      if (!names.length) return;
      e.preventDefault();
      const suffix = before.length === word.length ? ": " : " ";
      const head = before.slice(0, before.length - word.length) + names[0] + suffix;
      input.value = head + input.value.slice(before.length);
      input.setSelectionRange(head.length, head.length);
    }
  }
}
