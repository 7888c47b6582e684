package provider

import (
	"context"
	"encoding/json"

	"github.com/hashicorp/terraform-plugin-framework/diag"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// createRecordKey is the private-state key under which a resource keeps the request its create was
// sent with.
const createRecordKey = "create"

// createRecord is the create request behind a resource in state, while the create was not seen
// through (the CLI was interrupted, the agent stayed unreachable, the operation or the read after
// it failed). Operation is the agent's operation for it, if it answered: a refresh waits for that
// operation to end before it decides whether the object exists, because an interrupted create goes
// on on the node and a "not found" read before it ends would drop an object that is about to
// appear. Unconfirmed (VMs) means the VM of that name is this resource's only if it carries
// RequestID (the agent keeps it in the VM's metadata).
type createRecord struct {
	RequestID   string `json:"request_id"`
	Operation   string `json:"operation,omitempty"`
	Unconfirmed bool   `json:"unconfirmed,omitempty"`
}

// privateState is what the framework's request and response private data offer.
type privateState interface {
	GetKey(ctx context.Context, key string) ([]byte, diag.Diagnostics)
}

type privateSetter interface {
	SetKey(ctx context.Context, key string, value []byte) diag.Diagnostics
}

func loadCreateRecord(ctx context.Context, p privateState) (createRecord, diag.Diagnostics) {
	var rec createRecord
	if p == nil {
		return rec, nil
	}
	b, diags := p.GetKey(ctx, createRecordKey)
	if diags.HasError() || len(b) == 0 {
		return rec, diags
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		diags.AddWarning("Unreadable private state", "The provider's record of this resource's create could not be read ("+
			err.Error()+"); it is ignored.")
		return createRecord{}, diags
	}
	return rec, diags
}

// clearCreateRecord removes the record once the create was seen through.
func clearCreateRecord(ctx context.Context, p privateSetter) diag.Diagnostics {
	return p.SetKey(ctx, createRecordKey, nil)
}

func (r createRecord) save(ctx context.Context, p privateSetter) diag.Diagnostics {
	b, err := json.Marshal(r)
	if err != nil {
		var d diag.Diagnostics
		d.AddError("Private state", err.Error())
		return d
	}
	return p.SetKey(ctx, createRecordKey, b)
}

// settle waits, for a resource whose create was not seen through, until the create's operation
// has ended on the agent (or the agent no longer knows it, or the operation timeout passes), so
// that the read which follows sees what the create made. It reports nothing: the read decides.
func (p *providerData) settle(ctx context.Context, rec createRecord) {
	if rec.Operation == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, p.operationTimeout)
	defer cancel()
	op := &v1.Operation{Id: rec.Operation, State: v1.Operation_STATE_RUNNING}
	for n := 0; ; n++ {
		_, err := p.client.Wait(ctx, op, nil)
		if err == nil || !transient(err) || ctx.Err() != nil {
			// Ended (succeeded or failed), forgotten by a restarted agent (NOT_FOUND), or out of
			// time: the read decides.
			return
		}
		if !backoff(ctx, n) {
			return
		}
	}
}
