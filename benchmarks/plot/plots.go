package main

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotBatching draws, for each load and call kind, the p95 latency against
// the offered rate, one line per set-up, with the rounds' range as error
// bars: NAME-LOAD-KIND.png.
func plotBatching(d batchingData, dir, name string) error {
	for _, load := range loadOrder {
		if d.cells[load] == nil {
			continue
		}
		for _, kind := range kindsOf(load) {
			p := plot.New()
			p.Title.Text = fmt.Sprintf("%s: %s p95 latency vs offered load", load, kind)
			p.X.Label.Text = "offered calls/s (Poisson)"
			p.Y.Label.Text = kind + " p95 latency, ms (log)"
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
			p.Legend.Top = true
			p.Legend.Left = true
			for i, s := range d.setups(load) {
				var pts plotter.XYs
				var errs plotter.YErrors
				for _, rate := range d.rates(load) {
					c := d.cells[load][rate][s]
					if c == nil {
						continue
					}
					st := c.stat(kindFigure(kind, func(k *kindReport) float64 { return k.P95Ms }))
					if st.med <= 0 {
						continue
					}
					pts = append(pts, plotter.XY{X: rate, Y: st.med})
					errs = append(errs, struct{ Low, High float64 }{st.med - st.lo, st.hi - st.med})
				}
				if len(pts) == 0 {
					continue
				}
				if err := addLine(p, s, i, pts, errs); err != nil {
					return err
				}
			}
			target := float64(latencyGoal)
			if kind == "image" {
				target = imageGoal
			}
			goal, err := plotter.NewLine(plotter.XYs{{X: 0, Y: target}, {X: d.rates(load)[len(d.rates(load))-1], Y: target}})
			if err != nil {
				return err
			}
			goal.Color = color.Gray{Y: 150}
			goal.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
			p.Add(goal)
			p.Legend.Add(fmt.Sprintf("%g ms", target), goal)
			if err := p.Save(16*vg.Centimeter, 11*vg.Centimeter, filepath.Join(dir, fmt.Sprintf("%s-%s-%s.png", name, load, kind))); err != nil {
				return err
			}
		}
	}
	return nil
}

// addLine adds one series with points, error bars and a legend entry.
func addLine(p *plot.Plot, name string, i int, pts plotter.XYs, errs plotter.YErrors) error {
	l, sc, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	l.Color = plotutil.Color(i)
	l.Dashes = plotutil.Dashes(i)
	sc.Color = plotutil.Color(i)
	sc.Shape = plotutil.Shape(i)
	eb, err := plotter.NewYErrorBars(struct {
		plotter.XYer
		plotter.YErrorer
	}{pts, errs})
	if err != nil {
		return err
	}
	eb.Color = plotutil.Color(i)
	p.Add(l, sc, eb)
	p.Legend.Add(name, l, sc)
	return nil
}

// plotRouting draws each policy's p99 per scenario and call kind as
// points side by side, with the rounds' range as error bars:
// routing-p99.png.
func plotRouting(d routingData, dir string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("routing: p99 latency per scenario (mix at %g calls/s)", d.rate)
	p.Y.Label.Text = "p99 latency, ms (log)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	var labels []string
	for _, sc := range d.scenarios() {
		for _, k := range []string{"query", "image"} {
			labels = append(labels, sc+" "+k)
		}
	}
	top := 0.0
	for i, pol := range policyOrder {
		var pts plotter.XYs
		var errs plotter.YErrors
		j := 0
		for _, sc := range d.scenarios() {
			for _, k := range []string{"query", "image"} {
				if c := d.cells[sc][pol]; c != nil {
					st := c.stat(kindFigure(k, func(k *kindReport) float64 { return k.P99Ms }))
					if st.med > 0 {
						pts = append(pts, plotter.XY{X: float64(j) + 0.2*float64(i-1), Y: st.med})
						errs = append(errs, struct{ Low, High float64 }{st.med - st.lo, st.hi - st.med})
						top = max(top, st.hi)
					}
				}
				j++
			}
		}
		if len(pts) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return err
		}
		sc.Color = plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		sc.Radius = vg.Points(4)
		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYer
			plotter.YErrorer
		}{pts, errs})
		if err != nil {
			return err
		}
		eb.Color = plotutil.Color(i)
		p.Add(sc, eb)
		p.Legend.Add(pol, sc)
	}
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.6, float64(len(labels))-0.4
	p.Y.Max = top * 4 // room for the legend above the points
	return p.Save(20*vg.Centimeter, 11*vg.Centimeter, filepath.Join(dir, "routing-p99.png"))
}
