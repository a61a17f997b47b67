using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Vnet.Adaptation;
using Vnet.ChangeSets;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Links;
using Vnet.Overlay;

namespace Vnet.Json;

/// <summary>
/// The daemon's records as JSON, for the control protocol, the Proxy's requests to hosts and the
/// CLI: typed values written as the text the CLI and the language use (see <see cref="MacAddressJsonConverter"/>).
/// </summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    Converters =
    [
        typeof(MacAddressJsonConverter), typeof(MacMatchJsonConverter), typeof(PortRefJsonConverter), typeof(RuleActionJsonConverter),
        typeof(CamelCaseEnumConverter<DaemonRole>), typeof(CamelCaseEnumConverter<LinkTransport>), typeof(CamelCaseEnumConverter<RuleOrigin>),
        typeof(CamelCaseEnumConverter<InterfaceKind>), typeof(CamelCaseEnumConverter<ChangeOp>), typeof(CamelCaseEnumConverter<AdaptationPolicy>),
        typeof(CamelCaseEnumConverter<Peers.MapTopic>), typeof(CamelCaseEnumConverter<Vms.RepairKind>),
    ])]
[JsonSerializable(typeof(DaemonStatus))]
[JsonSerializable(typeof(LinkStatus))]
[JsonSerializable(typeof(LinkSecurityStatus))]
[JsonSerializable(typeof(IReadOnlyList<LinkStatus>))]
[JsonSerializable(typeof(List<LinkStatus>))]
[JsonSerializable(typeof(RuleStatus))]
[JsonSerializable(typeof(IReadOnlyList<RuleStatus>))]
[JsonSerializable(typeof(List<RuleStatus>))]
[JsonSerializable(typeof(InterfaceStatus))]
[JsonSerializable(typeof(IReadOnlyList<InterfaceStatus>))]
[JsonSerializable(typeof(List<InterfaceStatus>))]
[JsonSerializable(typeof(VmStatus))]
[JsonSerializable(typeof(IReadOnlyList<VmStatus>))]
[JsonSerializable(typeof(List<VmStatus>))]
[JsonSerializable(typeof(DaemonState))]
[JsonSerializable(typeof(List<DaemonState>))]
[JsonSerializable(typeof(DaemonChange))]
[JsonSerializable(typeof(List<DaemonChange>))]
[JsonSerializable(typeof(ApplyResult))]
[JsonSerializable(typeof(OverlayStates))]
[JsonSerializable(typeof(TraceResult))]
[JsonSerializable(typeof(OverlayApplyReport))]
[JsonSerializable(typeof(VttifMatrix))]
[JsonSerializable(typeof(AdaptationStatus))]
[JsonSerializable(typeof(PlacementPlan))]
[JsonSerializable(typeof(VttifTopology))]
[JsonSerializable(typeof(List<VttifEvent>))]
[JsonSerializable(typeof(Vms.DirectoryStatus))]
public sealed partial class DaemonJson : JsonSerializerContext
{
    public static JsonNode? ToNode<T>(T value) =>
        JsonSerializer.SerializeToNode(value, typeof(T), Default);

    public static T? FromNode<T>(JsonNode? node) =>
        node is null ? default : (T?)node.Deserialize(typeof(T), Default);
}
