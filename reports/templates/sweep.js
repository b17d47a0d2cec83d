/* labelaudit sweep page: draw the embedded plotly figures (no other behaviour). */
(function () {
  "use strict";
  const TEMPLATE = JSON.parse(document.getElementById("plotly-template").textContent);
  const CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d"],
  };
  document.querySelectorAll(".plot[data-fig]").forEach(function (div) {
    const spec = JSON.parse(document.getElementById(div.dataset.fig).textContent);
    const layout = spec.layout || {};
    layout.template = TEMPLATE;
    Plotly.newPlot(div, spec.data || [], layout, CONFIG).catch(function (err) {
      const p = document.createElement("p");
      p.className = "missing";
      p.textContent = "This chart could not be drawn: " + err;
      div.replaceChildren(p);
    });
  });
})();
