/* The shell's menu on small screens: the toggle button opens and closes it; following a
   link closes it. Delegated on the document, so it survives Dash re-rendering the shell. */
document.addEventListener("click", function (ev) {
  var header = document.querySelector(".wg-header");
  if (!header) return;
  var toggle = ev.target.closest && ev.target.closest("#shell-menu-toggle");
  if (toggle) {
    var open = header.classList.toggle("wg-menu-open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  } else if (ev.target.closest && ev.target.closest(".wg-nav a")) {
    header.classList.remove("wg-menu-open");
    var btn = document.getElementById("shell-menu-toggle");
    if (btn) btn.setAttribute("aria-expanded", "false");
  }
});
