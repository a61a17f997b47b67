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
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // One line, no stack trace: a file that exists (never overwritten), a missing directory, no permission.
                    Console.Error.WriteLine($"vnet: cannot write {file.FullName}: {WriteError(e, file)}");
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

    /// <summary>Why a key file could not be made, in words for the user.</summary>
    private static string WriteError(Exception e, FileInfo file) => e switch
    {
        DirectoryNotFoundException => $"the directory {file.DirectoryName} does not exist",
        UnauthorizedAccessException => $"permission denied ({e.InnerException?.Message ?? e.Message})",
        IOException when file.Exists => "the file exists (a key file is never overwritten; remove it first or choose another name)",
        _ => e.Message,
    };

    public static Command CreatePubkey()
    {
        var input = new Argument<string?>("file")
        {
            Description = "A private key file (mode 0600, as the daemon reads it); without it, standard input",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var command = new Command("pubkey", "Read a private key (a file, or standard input, as 'vnet keygen' prints it) and print its public key.") { input };
        command.SetAction(p =>
        {
            string text;
            try
            {
                text = p.GetValue(input) is { } path ? KeyFiles.Read(path, "key file") : Console.In.ReadToEnd();
            }
            catch (ConfigException e)
            {
                Console.Error.WriteLine($"vnet: {e.Message}");
                return 2;
            }
            using var key = StaticKeyPair.TryParse(text, out var error);
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
