// The sign-in screen: log in, or create an account as the server's policy allows
// (hello.registration: open, invite or closed; protocol.md §18.1).

const $ = (id) => document.getElementById(id);
const NAME = /^[A-Za-z0-9_-]{1,32}$/;

export class LoginForm {
  constructor(connection) {
    this.conn = connection;
    this.mode = "login";
    this.policy = "open";
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    for (const tab of document.querySelectorAll("#login-tabs [data-mode]")) {
      tab.addEventListener("click", () => this.setMode(tab.dataset.mode));
    }
    connection.addEventListener("hello", (e) => this.hello(e.detail.hello));
    this.setMode("login");
  }

  hello(hello) {
    $("login-server").textContent = hello.server ? `${hello.server} · ${hello.software || ""}` : "";
    // No registration field: a server from before accounts, where a new name registers.
    this.policy = hello.registration || "open";
    $("login-tabs").hidden = this.policy === "closed";
    $("login-closed").hidden = this.policy !== "closed";
    if (this.policy === "closed" && this.mode === "register") this.setMode("login");
    this.setMode(this.mode);
  }

  setMode(mode) {
    this.mode = mode;
    const register = mode === "register";
    $("login-form").dataset.mode = mode;
    for (const tab of document.querySelectorAll("#login-tabs [data-mode]")) {
      tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
    }
    $("password2-field").hidden = !register;
    $("invite-field").hidden = !(register && this.policy === "invite");
    $("login-password").autocomplete = register ? "new-password" : "current-password";
    $("login-submit").textContent = register ? "Create account" : "Sign in";
    this.error("");
  }

  error(text) {
    $("login-error").textContent = text;
    $("login-error").hidden = !text;
  }

  connectionState(state, label) {
    // A refused login is explained by the error box; the rest is progress.
    $("login-status").textContent = ["connecting", "login", "reconnecting"].includes(state) ? label : "";
    $("login-submit").disabled = state === "login";
  }

  submit() {
    const user = $("login-user").value.trim();
    const password = $("login-password").value;
    const register = this.mode === "register";
    if (!NAME.test(user)) return this.error("A user name is 1 to 32 letters, digits, '_' or '-'.");
    if (!password) return this.error("Type your password.");
    if (register && password !== $("login-password2").value) return this.error("The two passwords differ.");
    const invite = $("login-invite").value.trim();
    if (register && this.policy === "invite" && !invite) return this.error("This server creates accounts by invitation: type your invite code.");
    this.error("");
    // The password stays in memory only, for logging in again after a reconnect.
    this.conn.login({ user, password, register, invite: register ? invite : undefined });
  }

  /** The sentence to show for a refused login: the server's, except where its words
   * are meant for the terminal client (which asks "create account?" itself). */
  explain(error) {
    if (error.code === "no_such_account") {
      const name = $("login-user").value.trim();
      return this.policy === "closed"
        ? `There is no account ${name} on this server, and it creates none itself: ask its administrator for one.`
        : `There is no account ${name} on this server: check the name, or choose "Create account".`;
    }
    return error.text || error.code;
  }

  show(errorText) {
    $("login-screen").hidden = false;
    $("app").hidden = true;
    this.error(errorText || "");
    $("login-password").value = "";
    $("login-password2").value = "";
    $("login-password").focus();
  }

  hide() {
    $("login-screen").hidden = true;
    $("login-password").value = "";
    $("login-password2").value = "";
  }
}
