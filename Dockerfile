# Build and run the ledger. Used by docker-compose.yml.
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY Directory.Build.props Directory.Packages.props Ledger.sln ./
COPY src/Ledger/Ledger.csproj src/Ledger/
RUN dotnet restore src/Ledger/Ledger.csproj
COPY src/ src/
RUN dotnet publish src/Ledger/Ledger.csproj -c Release -o /app --no-restore

FROM mcr.microsoft.com/dotnet/aspnet:10.0
WORKDIR /app
COPY --from=build /app ./
ENV ASPNETCORE_URLS=http://+:8080
EXPOSE 8080
USER app
ENTRYPOINT ["dotnet", "Ledger.dll"]
