// Opt-in browser notifications for mentions, private messages and file offers.
// Permission is asked only when the user turns them on, never at page load.

import { sanitize } from "./text.js";

const KEY = "securechat.notifications";

export class Notifier {
  constructor() {
    this.enabled = localStorage.getItem(KEY) === "on" && this.permitted;
  }

  get supported() {
    return "Notification" in window;
  }

  get permitted() {
    return this.supported && Notification.permission === "granted";
  }

  /** Turn notifications on (asking permission) or off; resolves to the new state. */
  async toggle() {
    if (this.enabled) {
      this.enabled = false;
    } else if (this.supported) {
      const answer = Notification.permission === "default" ? await Notification.requestPermission() : Notification.permission;
      this.enabled = answer === "granted";
    }
    localStorage.setItem(KEY, this.enabled ? "on" : "off");
    return this.enabled;
  }

  /** Notify unless the user is looking at that conversation already. */
  show(title, body, { visibleHere = false, onClick = null } = {}) {
    if (!this.enabled || !this.permitted) return;
    if (visibleHere && !document.hidden) return;
    // Notifications render plain text, but make invisible characters visible here too.
    const n = new Notification(sanitize(title), { body: sanitize(body).slice(0, 200), tag: sanitize(title) });
    n.onclick = () => {
      window.focus();
      onClick?.();
      n.close();
    };
  }
}
