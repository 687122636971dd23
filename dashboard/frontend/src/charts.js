// The dashboard's charts. Each <div class="chart" data-option="ID"> gets the ECharts option in the JSON script
// element #ID (the server writes it from the same report rows as the tables); the live page updates its chart and
// table from server-sent events. Only the chart types and components used are imported, to keep the bundle small.
import * as echarts from "echarts/core";
import { BarChart, LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent, DatasetComponent, TitleComponent } from "echarts/components";
import { SVGRenderer } from "echarts/renderers";

echarts.use([BarChart, LineChart, GridComponent, LegendComponent, TooltipComponent, DatasetComponent, TitleComponent,
  SVGRenderer]);

const charts = [];

function render(element, option) {
  let chart = echarts.getInstanceByDom(element);
  if (!chart) {
    chart = echarts.init(element, null, { renderer: "svg" });
    charts.push(chart);
  }
  chart.setOption(option, true);
  element.dataset.rendered = "1";
  return chart;
}

function renderAll() {
  document.querySelectorAll(".chart[data-option]").forEach((element) => {
    const source = document.getElementById(element.dataset.option);
    if (source) render(element, JSON.parse(source.textContent));
  });
}

function cell(text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  return td;
}

function startLive() {
  const panel = document.getElementById("live");
  if (!panel || !window.EventSource) return;
  const status = document.getElementById("live-status");
  const body = document.querySelector("#live-table tbody");
  const chartElement = document.getElementById("live-chart");
  const source = new EventSource(panel.dataset.stream);
  source.addEventListener("counters", (event) => {
    const data = JSON.parse(event.data);
    const head = document.querySelector("#live-table thead tr");
    head.replaceChildren();
    ["channel", ...data.stages, "revenue"].forEach((name, index) => {
      const th = document.createElement("th");
      th.textContent = name;
      if (index) th.className = "num";
      head.appendChild(th);
    });
    body.replaceChildren();
    data.rows.forEach((row) => {
      const tr = document.createElement("tr");
      tr.appendChild(cell(row.channel, false));
      data.stages.forEach((stage) => tr.appendChild(cell(String(row[stage] || 0), true)));
      tr.appendChild(cell(row.revenue, true));
      body.appendChild(tr);
    });
    if (!data.rows.length) {
      const tr = document.createElement("tr");
      tr.appendChild(cell("(no conversions yet)", false));
      body.appendChild(tr);
    }
    render(chartElement, data.option);
    status.textContent = data.message;
    status.className = data.error ? "error" : "muted";
    panel.dataset.updates = String(Number(panel.dataset.updates || "0") + 1);
  });
  source.onerror = () => {
    status.textContent = "connection to the dashboard lost; retrying";
    status.className = "error";
  };
}

window.addEventListener("resize", () => charts.forEach((chart) => chart.resize()));
document.addEventListener("DOMContentLoaded", () => {
  renderAll();
  startLive();
});
