package tritonsim

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/tensor"
)

// serverVersion is what ServerMetadata reports as the version: the
// simulator's own, which no Triton release has.
const serverVersion = "0.1.0-tritonsim"

// service implements Triton's GRPCInferenceService on a Server.
type service struct {
	inference.UnimplementedGRPCInferenceServiceServer
	s *Server
}

var _ inference.GRPCInferenceServiceServer = (*service)(nil)

func (v *service) ServerLive(context.Context, *inference.ServerLiveRequest) (*inference.ServerLiveResponse, error) {
	return &inference.ServerLiveResponse{Live: true}, nil
}

func (v *service) ServerReady(context.Context, *inference.ServerReadyRequest) (*inference.ServerReadyResponse, error) {
	return &inference.ServerReadyResponse{Ready: v.s.serverReady()}, nil
}

// ModelReady answers false, not an error, for an unknown model, as Triton
// does.
func (v *service) ModelReady(_ context.Context, req *inference.ModelReadyRequest) (*inference.ModelReadyResponse, error) {
	return &inference.ModelReadyResponse{Ready: v.s.ready(req.GetName(), req.GetVersion())}, nil
}

func (v *service) ServerMetadata(context.Context, *inference.ServerMetadataRequest) (*inference.ServerMetadataResponse, error) {
	return &inference.ServerMetadataResponse{
		Name:       Name,
		Version:    serverVersion,
		Extensions: []string{"parameters", "statistics", "schedule_policy"},
	}, nil
}

func (v *service) ModelMetadata(_ context.Context, req *inference.ModelMetadataRequest) (*inference.ModelMetadataResponse, error) {
	m, err := v.s.lookup(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	c := v.s.cfg
	return &inference.ModelMetadataResponse{
		Name:     m.name,
		Versions: []string{modelVersion},
		// The ColPali models in deployments/ are Python backend models.
		Platform: "python",
		Inputs: []*inference.ModelMetadataResponse_TensorMetadata{
			{Name: m.input, Datatype: tensor.TypeBytes, Shape: []int64{-1, 1}},
		},
		Outputs: []*inference.ModelMetadataResponse_TensorMetadata{
			{Name: c.Model.EmbeddingsOutput, Datatype: c.OutputDatatype, Shape: []int64{-1, -1, int64(c.Model.Dimension)}},
			{Name: c.Model.NumTokensOutput, Datatype: tensor.TypeINT32, Shape: []int64{-1, 1}},
		},
	}, nil
}

func (v *service) ModelStatistics(_ context.Context, req *inference.ModelStatisticsRequest) (*inference.ModelStatisticsResponse, error) {
	resp := &inference.ModelStatisticsResponse{}
	if req.GetName() == "" {
		for _, m := range v.s.order {
			resp.ModelStats = append(resp.ModelStats, m.stats.proto(m.name))
		}
		return resp, nil
	}
	m, err := v.s.lookup(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	resp.ModelStats = append(resp.ModelStats, m.stats.proto(m.name))
	return resp, nil
}

// lookup finds a served model, or fails with Triton's NotFound.
func (s *Server) lookup(name, version string) (*modelState, error) {
	m, ok := s.models[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Request for unknown model: '%s' is not found", name)
	}
	if version != "" && version != modelVersion {
		return nil, status.Errorf(codes.NotFound, "Request for unknown model: '%s' version %s is not found", name, version)
	}
	return m, nil
}

// ModelInfer answers one request: observe, validate, queue in the model's
// dynamic batcher, wait for the batch it joins to execute, answer.
func (v *service) ModelInfer(ctx context.Context, req *inference.ModelInferRequest) (resp *inference.ModelInferResponse, err error) {
	s := v.s
	arrived := s.clock.Now()
	s.observe(ctx, req, time.Now()) // deadlines are on real time
	if n := s.calls.Add(1); s.cfg.StopAfter > 0 && n == int64(s.cfg.StopAfter) {
		s.crash(n)
		return nil, status.Error(codes.Unavailable, "tritonsim crashed on purpose (stop after)")
	}

	m, err := s.lookup(req.GetModelName(), req.GetModelVersion())
	if err != nil {
		return nil, err
	}
	log := s.logger.With("model", m.name, "request_id", req.GetId())
	defer func() {
		if err != nil {
			// As in Triton, the duration counters count successes only.
			m.stats.recordFailure(s.clock.Now().Sub(arrived))
			m.metrics.failure.Inc()
			log.Debug("tritonsim infer failed", "code", status.Code(err), "err", err)
		}
	}()

	if s.faults.Load().isNotReady(m.name) {
		return nil, status.Errorf(codes.Unavailable, "model '%s' version %s is not ready (simulated fault)", m.name, modelVersion)
	}
	params, err := parseParams(req.GetParameters())
	if err != nil {
		return nil, err
	}
	items, outputs, err := m.parseInputs(req, s.cfg.Model)
	if err != nil {
		return nil, err
	}
	inputDone := s.clock.Now()
	if rate := s.faults.Load().ErrorRate; rate > 0 && rand.Float64() < rate { // #nosec G404 -- simulated fault injection; no secret
		return nil, status.Error(codes.Internal, "simulated failure")
	}

	level := m.batching.level(params.priority)
	policy := m.batching.policy(level)
	var deadline time.Time
	if t := policy.timeout(time.Duration(params.timeoutMicros) * time.Microsecond); t > 0 {
		deadline = inputDone.Add(t)
	}
	p := newPending(items, level, inputDone, deadline, policy.TimeoutAction == TimeoutDelay)
	if err := m.batcher.enqueue(p); err != nil {
		return nil, inferError(req.GetId(), err)
	}
	// The embeddings depend on the inputs only: compute them (real CPU
	// work) while the request waits for its simulated batch.
	out, _ := embedBatch(m.kind, items, s.cfg.Model.Dimension, s.cfg.OutputDatatype, ctx.Done())
	var oc outcome
	select {
	case oc = <-p.done:
	case <-ctx.Done():
		// Out of the queue if still there; a batch already running keeps
		// its instance busy to the end, as on a GPU.
		m.batcher.cancel(p)
		return nil, inferError(req.GetId(), ctx.Err())
	case <-s.stop:
		return nil, inferError(req.GetId(), errStopped)
	}
	if oc.err != nil {
		return nil, inferError(req.GetId(), oc.err)
	}
	resp = s.response(m, req, len(items), outputs, out)
	done := s.clock.Now()

	// compute_input is the simulator's decoding and validation time;
	// compute_infer runs from the batch leaving the queue to its end, so
	// it includes any wait for a GPU shared with the other model, as a
	// backend's execution time does on a real shared GPU; compute_output
	// is the rest.
	t := timings{
		total:  done.Sub(arrived),
		queue:  oc.dispatched.Sub(inputDone),
		input:  inputDone.Sub(arrived),
		infer:  oc.finished.Sub(oc.dispatched),
		output: max(done.Sub(oc.finished), 0),
	}
	m.stats.recordSuccess(t)
	mm := m.metrics
	mm.success.Inc()
	mm.count.Add(float64(len(items)))
	mm.requestUs.Add(micros(t.total))
	mm.queueUs.Add(micros(t.queue))
	mm.computeInputUs.Add(micros(t.input))
	mm.computeInferUs.Add(micros(t.infer))
	mm.outputUs.Add(micros(t.output))
	mm.summaries.observe(t)
	log.Debug("tritonsim infer", "items", len(items), "batch_size", oc.batchSize, "queue", t.queue, "compute", t.infer, "priority_level", level)
	return resp, nil
}

// batchDuration is how long bt occupies its device: the cost model's draw
// plus the ExtraLatency fault in force when it starts.
func (s *Server) batchDuration(bt *batch) time.Duration {
	d, stalled := s.cost.duration(bt.kind, bt.size, bt.seq)
	if stalled {
		s.logger.Debug("tritonsim batch stalls", "model", s.cfg.Model.ModelName(bt.kind), "batch_size", bt.size, "duration", d)
	}
	return d + s.faults.Load().ExtraLatency
}

// finishBatch records a finished execution, answers its requests and frees
// its instance.
func (s *Server) finishBatch(bt *batch, instance int, started, finished time.Time) {
	m := s.models[s.cfg.Model.ModelName(bt.kind)]
	m.metrics.execCount.Inc()
	m.stats.recordExecution(finished, bt.size, finished.Sub(started))
	for _, p := range bt.reqs {
		p.done <- outcome{dispatched: bt.dispatched, started: started, finished: finished, batchSize: bt.size}
	}
	bt.owner.release(instance)
}

// response builds the ModelInferResponse with the requested outputs in the
// requested order.
func (s *Server) response(m *modelState, req *inference.ModelInferRequest, n int, outputs []string, out batchOutputs) *inference.ModelInferResponse {
	c := s.cfg.Model
	resp := &inference.ModelInferResponse{ModelName: m.name, ModelVersion: modelVersion, Id: req.GetId()}
	for _, name := range outputs {
		if name == c.EmbeddingsOutput {
			resp.Outputs = append(resp.Outputs, &inference.ModelInferResponse_InferOutputTensor{
				Name: name, Datatype: s.cfg.OutputDatatype, Shape: []int64{int64(n), int64(out.maxRows), int64(c.Dimension)},
			})
			resp.RawOutputContents = append(resp.RawOutputContents, out.embeddings)
			continue
		}
		resp.Outputs = append(resp.Outputs, &inference.ModelInferResponse_InferOutputTensor{
			Name: name, Datatype: tensor.TypeINT32, Shape: []int64{int64(n), 1},
		})
		resp.RawOutputContents = append(resp.RawOutputContents, out.numTokens)
	}
	return resp
}

// requestPrefix is how Triton prefixes its messages about a request that
// has an id.
func requestPrefix(id string) string {
	if id == "" {
		return ""
	}
	return "[request id: " + id + "] "
}

// inferError maps a scheduling or execution error to its gRPC status, once,
// here at the edge.
func inferError(id string, err error) error {
	prefix := requestPrefix(id)
	switch {
	case errors.Is(err, errQueueFull):
		return status.Error(codes.Unavailable, prefix+"Exceeds maximum queue size")
	case errors.Is(err, errQueueTimeout):
		return status.Error(codes.Unavailable, prefix+"Request timeout expired")
	case errors.Is(err, errStopped):
		return status.Error(codes.Unavailable, prefix+"tritonsim is stopping")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, prefix+err.Error())
}

// observe records the call as it arrived, before any validation.
func (s *Server) observe(ctx context.Context, req *inference.ModelInferRequest, now time.Time) {
	ob := Observation{Model: req.GetModelName()}
	if ins := req.GetInputs(); len(ins) > 0 && len(ins[0].GetShape()) > 0 {
		ob.BatchSize = int(max(ins[0].GetShape()[0], 0))
	}
	if dl, ok := ctx.Deadline(); ok {
		ob.DeadlineLeft = max(dl.Sub(now), 1) // 1ns, not 0, for an already expired deadline: 0 means none
	}
	if p, ok := req.GetParameters()["timeout"]; ok {
		ob.TimeoutParam, _ = intParam(p)
	}
	if p, ok := req.GetParameters()["priority"]; ok {
		ob.Priority, _ = intParam(p)
	}
	if v := metadata.ValueFromIncomingContext(ctx, "traceparent"); len(v) > 0 {
		ob.Traceparent = v[0]
	}
	s.obs.add(ob)
}
