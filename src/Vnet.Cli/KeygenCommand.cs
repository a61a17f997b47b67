using System.CommandLine;
using Vnet.Configuration;
using Vnet.Links.Security;

namespace Vnet.Cli;

/// <summary><c>vnet keygen</c> and <c>vnet pubkey</c>: keys as WireGuard's <c>wg genkey</c> and <c>wg pubkey</c> make them.</summary>
internal static class KeygenCommand
{
    public static Command Create()
    {
        var output = new Option<FileInfo?>("--output", "-o") { Description = "Write the private key to this new file (mode 0600) instead of standard output" };
        var command = new Command("keygen",
            "Make a new private key (a daemon's, an administrator's, or the overlay's preshared key) and print it in base64; " +
            "'vnet pubkey' prints its public key.") { output };
        command.SetAction(p =>
        {
            using var key = StaticKeyPair.Generate();
            if (p.GetValue(output) is { } file)
            {
                try
                {
                    KeyFiles.Write(file.FullName, key.ExportPrivate());
                }
                catch (IOException e)
                {
                    Console.Error.WriteLine($"vnet: cannot write {file.FullName}: {e.Message}");
                    return 1;
                }
                Console.WriteLine(key.Public);
                return 0;
            }
            Console.WriteLine(key.ExportPrivate());
            return 0;
        });
        return command;
    }

    public static Command CreatePubkey()
    {
        var command = new Command("pubkey", "Read a private key on standard input (as 'vnet keygen' prints it) and print its public key.");
        command.SetAction(_ =>
        {
            using var key = StaticKeyPair.TryParse(Console.In.ReadToEnd(), out var error);
            if (key is null)
            {
                Console.Error.WriteLine($"vnet: {error}");
                return 2;
            }
            Console.WriteLine(key.Public);
            return 0;
        });
        return command;
    }
}
