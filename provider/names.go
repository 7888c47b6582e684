package provider

import (
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
)

// nameValidators check the agent's rule for pool, volume and VM names (rules.NamePattern);
// checking it here turns an apply-time INVALID_ARGUMENT into a plan-time error.
func nameValidators() []validator.String {
	return []validator.String{stringvalidator.RegexMatches(rules.NameRE(), "must be "+rules.NameRule)}
}

// enumNames maps between the API's enum values and the lower-case words the schema uses
// (Pool_TYPE_DIR ⇄ "dir").
type enumNames[E ~int32] struct {
	prefix string
	names  map[int32]string
}

func newEnumNames[E ~int32](prefix string, names map[int32]string) enumNames[E] {
	return enumNames[E]{prefix: prefix, names: names}
}

func (e enumNames[E]) word(v E) string {
	n := e.names[int32(v)]
	if n == "" {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(n, e.prefix))
}

func (e enumNames[E]) value(word string) E {
	for k, n := range e.names {
		if k != 0 && strings.EqualFold(strings.TrimPrefix(n, e.prefix), word) {
			return E(k)
		}
	}
	return 0
}

// words lists the accepted words (without UNSPECIFIED) for validators and docs.
func (e enumNames[E]) words() []string {
	var out []string
	for k := int32(1); ; k++ {
		n, ok := e.names[k]
		if !ok {
			return out
		}
		out = append(out, strings.ToLower(strings.TrimPrefix(n, e.prefix)))
	}
}

var (
	poolTypes    = newEnumNames[v1.Pool_Type]("TYPE_", v1.Pool_Type_name)
	poolStates   = newEnumNames[v1.Pool_State]("STATE_", v1.Pool_State_name)
	volumeFormat = newEnumNames[v1.Volume_Format]("FORMAT_", v1.Volume_Format_name)
	firmwares    = newEnumNames[v1.Firmware]("FIRMWARE_", v1.Firmware_name)
	powerStates  = newEnumNames[v1.PowerState]("POWER_STATE_", v1.PowerState_name)
	vmStates     = newEnumNames[v1.VMStatus_State]("STATE_", v1.VMStatus_State_name)
	diskBuses    = newEnumNames[v1.Disk_Bus]("BUS_", v1.Disk_Bus_name)
	nicTypes     = newEnumNames[v1.NIC_Type]("TYPE_", v1.NIC_Type_name)
)

// quoted renders words for descriptions: `a`, `b`, `c`.
func quoted(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "`" + w + "`"
	}
	return strings.Join(q, ", ")
}
