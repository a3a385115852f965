// Light and dark themes: follow prefers-color-scheme until the user picks one,
// which is remembered in localStorage.

const KEY = "securechat.theme";
const media = window.matchMedia("(prefers-color-scheme: dark)");

export function currentTheme() {
  const chosen = localStorage.getItem(KEY);
  if (chosen === "light" || chosen === "dark") return chosen;
  return media.matches ? "dark" : "light";
}

export function applyTheme() {
  document.documentElement.dataset.theme = currentTheme();
}

export function toggleTheme() {
  localStorage.setItem(KEY, currentTheme() === "dark" ? "light" : "dark");
  applyTheme();
  return currentTheme();
}

media.addEventListener("change", applyTheme);
applyTheme();
