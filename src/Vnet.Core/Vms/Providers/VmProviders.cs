using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Vms.Providers.Qemu;

namespace Vnet.Vms.Providers;

/// <summary>Builds the provider a host's configuration names (<c>vm_provider</c>), or none.</summary>
public static class VmProviders
{
    /// <summary>Default home of a provider's files: per daemon, under the temporary directory.</summary>
    public static string StateDirectory(DaemonConfig config) =>
        config.VmDirectory ?? Path.Combine(Path.GetTempPath(), "vnet-vms", config.Name);

    public static IVmProvider? Create(DaemonConfig config, ILogger logger) => config.VmProvider switch
    {
        VmProviderKind.Netns => new NetnsVmProvider(StateDirectory(config), logger),
        VmProviderKind.Qemu => new QemuVmProvider(StateDirectory(config), logger),
        _ => null,
    };
}
