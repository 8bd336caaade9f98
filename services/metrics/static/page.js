// The manager page's charts and refresh. Every figure is in the HTML the
// metrics service rendered; this script only draws the charts from the data
// the page embeds (#page-charts) and, every data-refresh seconds, fetches
// the page again and swaps its <main> in place (no reload, no flicker, the
// scroll position kept). It shows no time of its own: the page's "as of"
// comes from the service's clock.
(function () {
  "use strict";

  const PALETTE = [
    "#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df",
    "#bf3989", "#0a7a8a", "#57606a", "#fb8f44", "#4f8a10",
  ];
  let charts = [];

  function percent(value) {
    return value == null ? "—" : value.toFixed(1) + " %";
  }

  function width(element) {
    return Math.max(280, element.clientWidth || 600);
  }

  function trendChart(element, data) {
    const xs = data.labels.map(function (_, index) { return index; });
    const series = data.series.map(function (line, index) {
      return {
        label: line.label,
        stroke: PALETTE[index % PALETTE.length],
        width: 2,
        points: { show: true, size: 6 },
        value: function (_, value) { return percent(value); },
      };
    });
    const values = data.series.map(function (line) {
      return line.values.map(function (v) { return v == null ? null : v * 100; });
    });
    return new uPlot({
      width: width(element),
      height: 220,
      scales: {
        x: { time: false, range: [-0.25, xs.length - 0.75] },
        y: { range: [0, 100] },
      },
      axes: [
        {
          splits: function () { return xs; },
          values: function (_, splits) {
            return splits.map(function (i) { return data.labels[i] || ""; });
          },
        },
        { values: function (_, splits) { return splits.map(function (v) { return v + " %"; }); } },
      ],
      legend: { live: false },
      series: [{ label: "day", value: function (_, i) { return data.labels[i] || ""; } }]
        .concat(series),
    }, [xs].concat(values), element);
  }

  function attemptsChart(element, data) {
    const bars = [-1, 1];
    const series = data.series.map(function (entry, index) {
      return {
        label: entry.label,
        stroke: PALETTE[index],
        fill: PALETTE[index] + "cc",
        paths: uPlot.paths.bars({ size: [0.4, 40], align: bars[index] }),
        points: { show: false },
      };
    });
    const first = data.attempts[0];
    const last = data.attempts[data.attempts.length - 1];
    return new uPlot({
      width: width(element),
      height: 220,
      scales: { x: { time: false, range: [first - 0.75, last + 0.75] } },
      axes: [
        {
          label: "attempt",
          splits: function () { return data.attempts; },
          values: function (_, splits) { return splits.map(String); },
        },
        { label: "leads" },
      ],
      legend: { live: false },
      series: [{ label: "attempt" }].concat(series),
    }, [data.attempts].concat(data.series.map(function (s) { return s.values; })), element);
  }

  function draw() {
    charts.forEach(function (chart) { chart.destroy(); });
    charts = [];
    const source = document.getElementById("page-charts");
    if (!source || typeof uPlot === "undefined") {
      return;
    }
    const data = JSON.parse(source.textContent);
    document.querySelectorAll("[data-chart]").forEach(function (element) {
      const name = element.dataset.chart;
      if (name === "attempts") {
        charts.push(attemptsChart(element, data.attempts));
      } else {
        charts.push(trendChart(element, data[name]));
      }
    });
  }

  function stale(reason) {
    const asOf = document.querySelector("[data-figure='as-of']");
    const status = document.getElementById("refresh-status");
    status.textContent = "Could not refresh (" + reason + "): the figures are as of " +
      (asOf ? asOf.textContent : "the last load") + ".";
    status.className = "stale";
  }

  function refresh() {
    fetch(window.location.href, { cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        const fresh = new DOMParser().parseFromString(text, "text/html")
          .getElementById("page");
        if (!fresh) {
          throw new Error("not the page");
        }
        document.getElementById("page").replaceWith(fresh);
        const status = document.getElementById("refresh-status");
        status.textContent = "";
        status.className = "";
        draw();
      })
      .catch(function (error) { stale(error.message || "no answer"); })
      .finally(schedule);
  }

  // The next refresh is counted from the end of this one, so a slow render
  // (the queue waited for, say) cannot pile requests up or let an older page
  // replace a newer one.
  const seconds = Number(document.body.dataset.refresh);
  function schedule() {
    setTimeout(refresh, seconds * 1000);
  }

  let resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(draw, 200);
  });

  draw();
  if (seconds > 0) {
    schedule();
  }
})();
