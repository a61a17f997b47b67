namespace Vnet.Adaptation;

/// <summary>What the Proxy does with the inferred topology.</summary>
public enum AdaptationPolicy
{
    /// <summary>Infer and report only; never propose or change anything.</summary>
    Off,

    /// <summary>Compute the links, routes and placement it would choose and report them as advice.</summary>
    Advise,

    /// <summary>Apply the planned links and rules itself (placement stays advice: VNET does not migrate VMs).</summary>
    Auto,
}
