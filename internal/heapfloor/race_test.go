//go:build race

package heapfloor

// raceEnabled: the race detector maps shadow memory for every allocation,
// the ballast's included, so resident memory is not measured under it.
const raceEnabled = true
