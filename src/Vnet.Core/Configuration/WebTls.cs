using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Vnet.Configuration;

/// <summary>
/// The web front's TLS certificate and private key (<c>web_tls_cert_file</c>, <c>web_tls_key_file</c>;
/// PEM), so that the token and the overlay's state do not cross the network in clear. The key file
/// is checked as the daemon's key files are (private, the daemon's own); <see cref="ToString"/>
/// shows the certificate's subject and thumbprint, never the key.
/// </summary>
public sealed class WebTls
{
    private WebTls(X509Certificate2 certificate) => Certificate = certificate;

    public X509Certificate2 Certificate { get; }

    /// <summary>Loads both files; a missing, open or malformed file is refused with the field and the reason.</summary>
    public static WebTls Load(string certFile, string keyFile, string certField, string keyField)
    {
        var keyText = KeyFiles.Read(keyFile, keyField);
        string certText;
        try
        {
            certText = File.ReadAllText(certFile);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException(certField, e.Message);
        }
        try
        {
            var certificate = X509Certificate2.CreateFromPem(certText, keyText);
            if (!certificate.HasPrivateKey)
                throw new ConfigException(keyField, $"{keyFile} holds no private key for {certFile}");
            return new WebTls(certificate);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            throw new ConfigException(certField, $"{certFile} and {keyFile} are not a PEM certificate and its private key: {e.Message}");
        }
    }

    public override string ToString() => $"(TLS certificate {Certificate.Subject}, {Certificate.Thumbprint})";
}
