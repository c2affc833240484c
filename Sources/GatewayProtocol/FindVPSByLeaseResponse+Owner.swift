import TextFormats

extension FindVPSByLeaseResponse {
    /// Nil when the answer may name a lease's owner; else why not. The VPS id becomes a hosts
    /// file name and the organization id travels with it, so both must be DNS labels (an
    /// empty organization is allowed: old peers do not send one).
    public var ownerProblem: String? {
        if let problem = HostsName.problem(with: vpsID) { return "vps_id '\(Printable.escaped(vpsID, limit: 80))' is not a DNS label: \(problem)" }
        if !organizationID.isEmpty, let problem = HostsName.problem(with: organizationID) {
            return "organization_id '\(Printable.escaped(organizationID, limit: 80))' is not a DNS label: \(problem)"
        }
        return nil
    }
}
