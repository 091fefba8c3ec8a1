// AutoDetect's page: upload a photo, show the three most likely models, their offers nearby and prices.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("identify-form"), photo = $("photo"), preview = $("preview"), submit = $("submit");
  const status = $("status"), results = $("results"), list = $("candidates");
  const postal = $("postal-code"), radius = $("radius"), locStatus = $("location-status");
  let maxUpload = 15 * 1024 * 1024;
  let coords = null; // {lat, lon} from the browser

  const say = (text, error = false) => { status.textContent = text; status.classList.toggle("error", error); };

  fetch("/health").then((r) => r.json()).then((h) => {
    if (h.max_upload_bytes) maxUpload = h.max_upload_bytes;
    if (h.default_radius_km) {
      const r = String(Math.round(h.default_radius_km));
      if (![...radius.options].some((o) => o.value === r)) radius.add(new Option(`${r} km`, r));
      radius.value = r;
    }
    if (!h.model) say("No model is trained yet: identification is not available.", true);
  }).catch(() => {});

  $("locate").addEventListener("click", () => {
    if (!navigator.geolocation) { locStatus.textContent = "This browser cannot tell its location."; return; }
    locStatus.textContent = "Finding you…";
    navigator.geolocation.getCurrentPosition(
      (p) => {
        coords = { lat: p.coords.latitude, lon: p.coords.longitude };
        postal.value = "";
        locStatus.textContent = `Using your location (${coords.lat.toFixed(3)}, ${coords.lon.toFixed(3)}).`;
      },
      (e) => { coords = null; locStatus.textContent = `No location: ${e.message}`; },
      { enableHighAccuracy: false, timeout: 10000, maximumAge: 600000 });
  });
  postal.addEventListener("input", () => {
    if (postal.value.trim()) { coords = null; locStatus.textContent = ""; }
  });

  photo.addEventListener("change", () => {
    const file = photo.files[0];
    submit.disabled = !file;
    if (!file) return;
    $("photo-label").textContent = file.name || "Photo";
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    form.requestSubmit();
  });

  // A photo above the upload limit is shrunk in the browser (the server would refuse it).
  async function shrink(file) {
    if (file.size <= maxUpload || !window.createImageBitmap) return file;
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    const scale = Math.min(1, 2048 / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    return new Promise((resolve) => canvas.toBlob((b) => resolve(b || file), "image/jpeg", 0.9));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = photo.files[0];
    if (!file) { say("Choose a photo first.", true); return; }
    const data = new FormData();
    data.append("photo", await shrink(file), file.name || "photo.jpg");
    if (coords) { data.append("lat", coords.lat); data.append("lon", coords.lon); }
    else if (postal.value.trim()) data.append("postal_code", postal.value.trim());
    if (coords || postal.value.trim()) data.append("radius_km", radius.value);
    submit.disabled = true;
    say("Looking at your photo…");
    try {
      const response = await fetch("/identify", { method: "POST", body: data });
      const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
      if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`);
      render(body);
      say("");
    } catch (err) {
      results.hidden = true;
      verdict.hidden = true;
      say(`Sorry: ${err.message}`, true);
    } finally {
      submit.disabled = !photo.files[0];
    }
  });

  const money = (value, currency) => {
    if (value == null) return "";
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "USD", maximumFractionDigits: 0 }).format(value);
    } catch { return `${Math.round(value)} ${currency || ""}`.trim(); }
  };
  const safeLink = (url) => /^https?:\/\//i.test(url || "") ? url : null;

  // "no car recognised" and "a car, but not a model we know" replace the ranking (still in the JSON).
  const verdict = $("verdict");
  const HINTS = {
    no_car: "Try again with a photo that shows the whole car, from the front, side or back.",
    unknown_model: "This model is not in our catalogue yet, so we cannot show its offers.",
  };
  function showVerdict(body) {
    const known = !body.verdict || body.verdict === "car";
    verdict.hidden = known;
    if (known) return false;
    verdict.className = `verdict ${body.verdict}`;
    const text = body.message || body.verdict;
    verdict.querySelector(".verdict-message").textContent = text.charAt(0).toUpperCase() + text.slice(1);
    verdict.querySelector(".verdict-hint").textContent = HINTS[body.verdict] || "";
    results.hidden = true;
    return true;
  }

  function render(body) {
    if (showVerdict(body)) return;
    list.replaceChildren();
    const located = body.location != null;
    for (const c of body.candidates) {
      const node = $("candidate-template").content.firstElementChild.cloneNode(true);
      const pct = Math.round(c.probability * 1000) / 10;
      node.querySelector(".candidate-name").textContent = c.name;
      node.querySelector(".probability").textContent = `${pct}%`;
      node.querySelector(".bar-fill").style.width = `${Math.max(0, Math.min(100, pct))}%`;
      const n = c.offers.count;
      node.querySelector(".offer-count").textContent = located
        ? `${n} ${n === 1 ? "offer" : "offers"} in your area`
        : `${n} ${n === 1 ? "offer" : "offers"}`;
      const p = c.asking_prices;
      node.querySelector(".asking-median").textContent = p.median != null ? `· median asking price ${money(p.median, p.currency)}` : "";
      const notes = [p.median != null
        ? `Asking prices ${money(p.p25, p.currency)}–${money(p.p75, p.currency)} (middle half), ${p.count} comparables`
        : `Too few comparables for a price range (${p.count} asking ${p.count === 1 ? "price" : "prices"}, ${p.min_comparables} needed)`];
      if (p.excluded_price_issue) notes.push(`${p.excluded_price_issue} not counted (auctions, placeholder prices…)`);
      if (p.excluded_other_currency) notes.push(`${p.excluded_other_currency} in other currencies not counted`);
      if (located && c.offers.unlocated) notes.push(`${c.offers.unlocated} without a known place`);
      node.querySelector(".price-note").textContent = notes.join("; ");
      const offers = node.querySelector(".offers");
      for (const o of c.nearest) offers.append(offerNode(o));
      list.append(node);
    }
    results.hidden = false;
  }

  // Each offer against its fair price: a deal badge, or why its price cannot count.
  const DEALS = { great: "Great deal", good: "Good deal", fair: "Fair price", high: "High price", overpriced: "Overpriced" };
  function showDeal(node, o) {
    const badge = node.querySelector(".deal"), fair = node.querySelector(".fair-price");
    if (o.deal_rating) {
      badge.textContent = DEALS[o.deal_rating] || o.deal_rating;
      badge.classList.add(o.deal_rating);
    } else if (o.price_issue) {
      badge.textContent = o.price_issue.charAt(0).toUpperCase() + o.price_issue.slice(1);
      badge.classList.add("unrated");
    } else badge.remove();
    if (o.fair_price == null) { fair.remove(); return; }
    const pct = o.difference_pct == null ? "" : ` (${o.difference_pct > 0 ? "+" : ""}${Math.round(o.difference_pct)}%)`;
    fair.textContent = `fair ${money(o.fair_price, o.currency)}${pct}`;
  }

  function offerNode(o) {
    const node = $("offer-template").content.firstElementChild.cloneNode(true);
    const img = node.querySelector(".thumb");
    if (o.thumbnail_url) {
      img.src = o.thumbnail_url;
      img.alt = o.title || "";
    } else {
      const blank = document.createElement("span");
      blank.className = "thumb";
      blank.setAttribute("aria-hidden", "true");
      img.replaceWith(blank);
    }
    const a = node.querySelector(".offer-title");
    a.textContent = o.title || `Listing ${o.listing_id}`;
    a.href = safeLink(o.url) || o.listing_url;
    const meta = [];
    if (o.year) meta.push(o.year);
    if (o.city) meta.push(o.city);
    if (o.distance_km != null) meta.push(`${o.distance_km < 10 ? o.distance_km.toFixed(1) : Math.round(o.distance_km)} km`);
    node.querySelector(".offer-meta").textContent = meta.join(" · ");
    node.querySelector(".offer-price").textContent = money(o.price, o.currency);
    showDeal(node, o);
    return node;
  }
})();
