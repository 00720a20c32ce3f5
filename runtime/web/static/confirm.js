// Asks before an action that cannot be undone (deleting jobs): a form with a
// data-confirm attribute submits only once the operator says yes to its question.
// Loaded as a file, as every dashboard script is (the CSP runs no inline script).
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}
